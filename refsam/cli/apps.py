"""``refsam demo | detect | remove | explain | tune``: the applications on the command line.

* ``demo``    the whole pipeline with every method beside its ground truth (`refsam.demo`)
* ``detect``  mislabeled-data detection by self-influence, against the loss and random baselines
* ``remove``  remove the k points most harmful to the validation loss per method, retrain, compare
* ``explain`` proponents and opponents of one validation prediction
* ``edit``    the fewest training points whose removal is predicted to change one prediction, checked
              by retraining
* ``tune``    choose ρ and λ by exact hypergradients on the validation loss, checked against finite
              differences of retraining and against a grid search

Data options are shared: ``--dataset`` (synthetic, synthetic2d, breast_cancer, digits, or a .csv/.npz
path), ``--model``, ``--rule``, ``--rho``, ``--weight-decay``, ``--lr``, ``--steps``, ``--seed``.
Figures go to ``--out`` when matplotlib is installed. Progress lines go to stderr where stderr is a
terminal (``--progress``, ``--no-progress``; ``--quiet`` is ``--no-progress``); the line announcing the
training is one of them, its content repeated on stdout once trained, followed by the run's steps and,
where it takes more than a second, the root solve's Jacobians.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DivergenceError, InvalidInputError
from ..validation import check_nonnegative, check_output_directory, check_positive
from .cases import add_jobs_argument, add_progress_argument, check_jobs, progress_from_args
from .choices import BUILTIN_DATASETS, DEFAULT_FLIP, METHODS, QUICK, RULES, TUNING_METHODS
from .choices import MODEL_NAMES as MODELS
from .train import add_optimizer_arguments, optimizer_from_args

if TYPE_CHECKING:  # the applications load when a command runs, not when the parser is built (--help)
    from .. import apps

DEFAULT_FIGURE_DIR = "refsam-figures"
WIDTH = 100  # columns of the reports' prose and tables


def _add_common(p: Any, steps: int = 300, methods: str = "all") -> None:
    """The shared arguments; ``methods``: "all" (--methods, default every method), "each" (--methods, a
    list run one by one instead of --method) or "one" (--method only: --methods is refused, not ignored)."""
    _add_training(p, steps)
    if methods == "all":
        p.add_argument("--methods", default=",".join(METHODS),
                       help=f"comma-separated influence methods (default all: {','.join(METHODS)})")
    elif methods == "each":
        p.add_argument("--methods", default=None, metavar="M1,M2,...",
                       help="explain by each of these methods in turn (default: the one --method)")
    else:
        p.add_argument("--methods", default=None, help=argparse.SUPPRESS)
    _add_output(p)


def _add_output(p: Any) -> None:
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"directory for figures and, for detect, scores.csv (default for figures: "
                        f"./{DEFAULT_FIGURE_DIR}; figures need matplotlib)")
    p.add_argument("--no-figures", action="store_true", help="do not write figures")
    p.add_argument("--force", action="store_true",
                   help="let figures (and detect's scores.csv) replace files or symbolic links of their "
                        "names that refsam did not write")
    add_progress_argument(p, "progress lines on stderr (and the line announcing the training, for the "
                             "commands that train first)")
    p.add_argument("--quiet", dest="progress", action="store_const", const=False,
                   help="the same as --no-progress")


def _add_training(p: Any, steps: int = 300) -> None:
    """The data, model, rule and training arguments every application shares."""

    p.add_argument("--dataset", default="synthetic",
                   help="synthetic, synthetic2d, breast_cancer, digits (need scikit-learn), or a .csv/.npz "
                        "path (default synthetic)")
    p.add_argument("--n", type=int, default=None, help="rows to use (default: 250 synthetic, all otherwise)")
    p.add_argument("--pca", type=int, default=None,
                   help="project features on this many principal components (default: off)")
    p.add_argument("--model", choices=MODELS, default="logistic")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--rule", choices=RULES, default="sam")
    p.add_argument("--rho", type=float, default=0.05, help="SAM radius ρ (default 0.05)")
    add_optimizer_arguments(p, weight_decay=1e-2)
    p.add_argument("--steps", type=int, default=None, dest="steps_given", metavar="STEPS",
                   help=f"full-batch SAM steps T (default {steps})")
    p.set_defaults(steps=steps)
    p.add_argument("--flip", type=float, default=None, metavar="FRACTION",
                   help=f"fraction of training labels flipped to plant noise (default {DEFAULT_FLIP} for the "
                        f"built-in datasets, 0 for a file: its labels are taken as they are, and an NPZ "
                        f"file's own `flipped` array marks known noise)")
    p.add_argument("--seed", type=int, default=0)


def add_parser(subparsers: Any) -> None:

    p = subparsers.add_parser("demo", help="the full pipeline: train, verify, attribute by every method, "
                                           "validate against retraining, detect flipped labels")
    _add_common(p)
    p.add_argument("--subset", type=int, default=None, help="training points validated by retraining (20)")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run in seconds ({', '.join(f'{k}={v}' for k, v in QUICK.items())})")
    add_jobs_argument(p)
    p.set_defaults(func=run_demo_command)

    p = subparsers.add_parser("detect", help="rank training points by self-influence to find mislabeled "
                                             "rows; lists the top suspects by their row in the file")
    _add_common(p)
    p.add_argument("--top", type=int, default=10, metavar="K",
                   help="suspects to list (default 10); --out DIR writes every scored row's scores to "
                        "DIR/scores.csv")
    p.add_argument("--protocols", action="store_true",
                   help="also the validation-influence ranking and the relabel-and-retrain curve, side by "
                        "side "
                        "(the held-out set split into validation and test)")
    p.set_defaults(func=run_detect)

    p = subparsers.add_parser("remove", help="remove the k points most harmful to the validation loss, "
                                             "retrain, and compare actual with predicted change")
    _add_common(p)
    p.add_argument("--k", type=int, default=None, help="points to remove (default 5%% of the training set)")
    p.add_argument("--random-trials", type=int, default=3, help="random removals for reference (3)")
    p.add_argument("--ks", default=None, metavar="K1,K2,...",
                   help="removal curves: test accuracy after removing the top k of each ranking, for each k "
                        "(the held-out set split into validation and test)")
    p.set_defaults(func=run_remove)

    p = subparsers.add_parser("explain", help="proponents and opponents of one validation prediction")
    _add_common(p, methods="each")
    p.add_argument("--index", type=int, default=0, help="validation point to explain (default 0)")
    p.add_argument("--k", type=int, default=5, help="proponents and opponents to list (default 5)")
    p.add_argument("--method", type=_method, default="closed_form", metavar="METHOD",
                   help=f"influence method, one of {','.join(METHODS)} (default closed_form; 0.1's "
                        f"names such as sam-full are accepted)")
    p.set_defaults(func=run_explain)

    p = subparsers.add_parser("edit", help="remove the fewest training points predicted to change one "
                                           "held-out prediction, retrain, and report predicted vs actual")
    _add_common(p, methods="one")
    p.add_argument("--index", type=int, default=None,
                   help="validation point to edit (default: the first misclassified one)")
    p.add_argument("--target", type=int, default=None,
                   help="class to make it predict (default: its label if misclassified, else the runner-up)")
    p.add_argument("--method", type=_method, default="closed_form", metavar="METHOD",
                   help="exact influence method: closed_form (default), closed_form_frozen, closed_form_erm, "
                        "trajectory")
    p.add_argument("--max-remove", type=int, default=None,
                   help="at most this many training points (default 10%% of the training set)")
    p.set_defaults(func=run_edit)

    p = subparsers.add_parser("tune", help="choose rho and weight decay by exact hypergradients of the "
                                           "validation loss; checked against retraining and a grid search")
    _add_training(p)
    _add_output(p)
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="held-out fraction whose mean loss is minimised (default 0.2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="minibatch training (default: full batch); hypergradients then go through the run")
    p.add_argument("--hypergradient", choices=TUNING_METHODS, default="auto",
                   help="closed_form (at converged SAM roots), trajectory (through the run), or auto "
                        "(closed_form for full-batch runs; default)")
    p.add_argument("--max-trainings", type=int, default=25, help="training budget of the search (25)")
    p.add_argument("--rho-max", type=float, default=0.2,
                   help="the search's bounds: rho in [1e-3, RHO_MAX], weight decay in [1e-4, 1] (0.2)")
    p.add_argument("--grid", type=int, default=6,
                   help="grid search with this many points per axis for comparison (default 6; 0: none)")
    p.set_defaults(func=run_tune)


def _method(text: str) -> str:
    """One method name (canonical or a 0.1 spelling) as its canonical name; argparse reports errors."""
    from .. import apps

    try:
        return apps.resolve_method(text).name
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be one of {','.join(METHODS)}, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    from .. import apps

    names = tuple(m.strip() for m in text.split(",") if m.strip())
    try:
        methods = tuple(apps.resolve_method(m).name for m in names)
    except ValueError:
        methods = ()
    if not methods:
        raise InvalidInputError(f"--methods must be a comma-separated subset of {','.join(METHODS)}, "
                         f"got {text!r}")
    return methods


def _figure_dir(args: argparse.Namespace) -> str | None:
    """The figure directory, or None (and a note on stdout) when figures are off or impossible."""
    from ..apps.plotting import matplotlib_available

    if args.no_figures:
        return None
    if not matplotlib_available():
        print("matplotlib is not installed: no figures (pip install matplotlib)")
        return None
    return check_output_directory("--out", args.out or DEFAULT_FIGURE_DIR)


def _print_figures(paths: list[str]) -> None:
    if paths:
        print("Figures written:")
        for path in paths:
            print(f"  {path}")


def _check_common(args: argparse.Namespace) -> None:
    """Every shared argument checked before any data is loaded or any model trained."""
    from .. import apps

    if args.steps_given is not None:
        args.steps = args.steps_given
    for name in ("steps", "hidden"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.flip is not None and not 0 <= args.flip < 1:
        raise InvalidInputError(f"--flip must lie in [0, 1), got {args.flip}")
    if args.n is not None and args.n < 4:
        raise InvalidInputError(f"--n must be >= 4, got {args.n}")
    if getattr(args, "random_trials", 0) < 0:
        raise InvalidInputError(f"--random-trials must be >= 0, got {args.random_trials}")
    if getattr(args, "k", None) is not None and args.k < 1:
        raise InvalidInputError(f"--k must be >= 1, got {args.k}")
    if getattr(args, "max_remove", None) is not None and args.max_remove < 1:
        raise InvalidInputError(f"--max-remove must be >= 1, got {args.max_remove}")
    if getattr(args, "ks", None) is not None:
        args.ks = _ks(args.ks)
    if getattr(args, "protocols", False) and (args.flip == 0 or args.flip is None
                                              and args.dataset not in BUILTIN_DATASETS):
        raise InvalidInputError("no flipped labels to detect: use --flip > 0 (--protocols corrects the "
                                "labels it flipped, whose true values it knows)")
    if getattr(args, "top", 1) < 1:
        raise InvalidInputError(f"--top must be >= 1, got {args.top}")
    if args.command == "edit" and args.methods is not None:
        raise InvalidInputError(f"edit uses one exact method: --method METHOD (got --methods "
                                f"{args.methods!r})")
    check_positive("--lr", args.lr)
    check_nonnegative("--rho", args.rho)
    check_nonnegative("--weight-decay", args.weight_decay)
    if getattr(args, "methods", None) is not None:
        _methods(args.methods)
    optimizer_from_args(args)  # the optimizer's flags, checked as refsam.SGD checks them
    if not args.no_figures:  # before the work: a refusal costs a second, not a run
        check_output_directory("--out", args.out or DEFAULT_FIGURE_DIR)
        from ..apps.plotting import FIGURE_NAMES, check_figure_targets

        check_figure_targets(args.out or DEFAULT_FIGURE_DIR, FIGURE_NAMES.get(args.command, ()), args.force)
    if args.command == "detect" and args.out is not None:
        check_output_directory("--out", args.out)
        apps.check_scores_path(args.out, args.force)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, apps.Fit]:
    """Data, problem and fit shared by detect/remove/explain. Returns (train, val, fit)."""
    from .. import apps
    from ..apps.demo import format_fixed_point, prepare_data
    from ..models import build_model
    from ..objective import Problem
    from ..sam import SAM

    _check_common(args)
    held_out = 0.0 if args.command == "detect" and not args.protocols else 0.2  # detect ranks every row
    train, val = prepare_data(args.dataset, args.n, args.model, args.flip, held_out, args.seed, args.pca)
    if getattr(args, "ks", None) is not None and args.ks[-1] >= train.n:
        raise InvalidInputError(f"--ks must list removal counts below the {train.n} training points, got "
                                f"{args.ks[-1]}")
    if args.command in ("explain", "edit") and args.index is not None and not 0 <= args.index < val.n:
        raise InvalidInputError(f"--index must lie in 0..{val.n - 1} (validation points), got {args.index}")
    if args.command == "edit" and args.target is not None and not 0 <= args.target < train.n_classes:
        raise InvalidInputError(f"--target must be a class in 0..{train.n_classes - 1}, got {args.target}")
    model = build_model(args.model, train.p, train.n_classes, args.hidden)
    problem = Problem(model, train.X, train.y)
    sam = SAM(args.rho, args.rule)
    progress = progress_from_args(args)
    if progress:  # a progress line: stdout says the same once trained
        print(f"training {model!r} on {train.name}: {train.n} points, {_held_out(val)}, "
              f"{_noise(train)}; {sam!r}", file=sys.stderr, flush=True)
    # (the run's steps every 10%, then the root solve's lines where it runs past a second)
    fit_ = apps.fit(problem, sam, optimizer_from_args(args), args.steps, seed=args.seed, progress=progress)
    reason = apps.divergence(fit_.problem, fit_.trajectory)
    if reason:
        raise DivergenceError(f"{reason}; lower --lr (got {args.lr})")
    print(f"{train.name}: n = {train.n} training ({_noise(train)}), {_held_out(val)}, "
          f"{model!r}, d = {problem.d}; {sam!r}, λ = {args.weight_decay}, η = {args.lr}, T = {args.steps}")
    _print_label_map(train)
    print(format_fixed_point(fit_, None))
    return train, val, fit_


def _held_out(val: Any) -> str:
    return f"{val.n} validation" if val.n else "none held out"


def _noise(train: Any) -> str:
    flipped = int(train.flipped.sum())
    return f"{flipped} labels flipped" if flipped else "labels as given"


def _print_label_map(train: Any) -> None:
    """The classes' original labels, when they are not already 0..K−1 (names, or other ids)."""
    names = train.label_names()
    if names != [str(k) for k in range(train.n_classes)]:
        print("labels: " + ", ".join(f"{name!r} → {k}" for k, name in enumerate(names)))


def _cls(names: list[str], k: int) -> str:
    """Class k, with its original label when that differs from k (``0 (cat)``)."""
    return str(k) if names[k] == str(k) else f"{k} ({names[k]})"


def _source(args: argparse.Namespace) -> str:
    return args.dataset if args.dataset in BUILTIN_DATASETS else "the file"


def _rows(train: Any, idx: Any) -> list[int]:
    """Training indices as rows of the source (Dataset.rows)."""
    return [int(r) for r in train.rows[np.asarray(idx, dtype=np.int64)]]


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 0:
        raise InvalidInputError(f"--ks must be a comma-separated list of removal counts >= 0, got {text!r}")
    return ks


def _split_held_out(val: Any) -> tuple[Any, Any]:
    """The held-out set cut in half: (validation, test)."""
    h = val.n // 2
    if h < 2:
        raise InvalidInputError(f"the held-out set has {val.n} points: too few to split into validation and "
                                f"test (use a larger --n)")
    return val.subset(np.arange(h)), val.subset(np.arange(h, val.n))


def _chosen(fit_: apps.Fit, args: argparse.Namespace) -> list[str]:
    return [m for m in _methods(args.methods) if m in fit_.available_methods()]


def run_demo_command(args: argparse.Namespace) -> int:
    from ..apps.demo import DemoConfig, format_report, run_demo
    from ..apps.plotting import matplotlib_available

    _check_common(args)
    check_jobs(args)
    given = {"n": args.n, "steps": args.steps_given, "subset": args.subset}  # None: not on the command line
    sizes: dict[str, Any] = {  # --quick fills only the sizes that were not given
        key: (QUICK[key] if args.quick else default) if given[key] is None else given[key]
        for key, default in (("n", None), ("steps", 300), ("subset", 20))}
    figures = None if args.no_figures or not matplotlib_available() else args.out or DEFAULT_FIGURE_DIR
    config = DemoConfig(dataset=args.dataset, n=sizes["n"], pca=args.pca, model=args.model,
                        hidden=args.hidden, rule=args.rule, rho=args.rho, weight_decay=args.weight_decay,
                        lr=args.lr, steps=sizes["steps"], flip_fraction=args.flip,
                        subset=sizes["subset"],
                        seed=args.seed, methods=_methods(args.methods),
                        out_dir=figures,
                        progress=progress_from_args(args), momentum=args.momentum, dampening=args.dampening,
                        nesterov=args.nesterov, n_jobs=args.jobs,
                        force=args.force).validate()  # every argument checked first
    result = run_demo(config)
    print(format_report(result))
    if not args.no_figures and not matplotlib_available():  # said after the work, where figures would be
        print("matplotlib is not installed: no figures (pip install matplotlib)")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    from .. import apps
    from ..apps.demo import format_table

    train, val, fit_ = _setup(args)
    if args.flip and not train.flipped.any():  # --flip > 0 so small that no label flipped
        raise InvalidInputError(f"--flip {args.flip} flips no label of {train.n}: use a larger --flip")
    known = train.flipped if train.flipped.any() else None  # None: a user's labels, the noise unknown
    results = apps.detect_mislabeled(fit_, known, _chosen(fit_, args), seed=args.seed,
                                     progress=progress_from_args(args))
    if known is not None:
        print(f"\nDetection of {int(known.sum())} flipped labels among {train.n} training points "
              f"(score −I_j(ℓ_j); baselines: training loss, random)")
        rows = [[r.method] + [f"{v:.3f}" for v in r.metrics.values()] + [f"{r.seconds:.2f}"]
                for r in results]
        print(format_table(["method"] + list(results[0].metrics) + ["time [s]"], rows))
    _print_suspects(results, train, val, args)
    if args.protocols:
        _print_protocols(fit_, train, val, args)
    out_dir = _figure_dir(args)
    if out_dir and known is not None:
        from ..apps.plotting import detection_curves

        _print_figures(detection_curves(results, known, out_dir, force=args.force))
    return 0


def _print_suspects(results: list[apps.DetectionResult], train: Any, val: Any,
                    args: argparse.Namespace) -> None:
    """The top suspects by the first ranking, named by their row in the file; every row to --out."""
    from .. import apps
    from ..apps.demo import format_table

    lead, loss = results[0], next(r for r in results if r.method == "loss")
    top = lead.ranking[:min(args.top, train.n)]
    source = "the file" if args.dataset not in BUILTIN_DATASETS else args.dataset
    print("\n" + textwrap.fill(
        f"Most suspicious training rows by {lead.method} (score −I_j(ℓ_j): how much the row's own loss would "
        f"rise were it removed; higher = more suspicious); row = 0-based data row of {source}", WIDTH))
    labels = train.label_names()
    header = ["rank", "row", "label"] + ([] if not train.flipped.any() else ["flipped"]) + [
        f"score ({lead.method})", "loss"]
    rows = [[str(i + 1), str(int(train.rows[j])), labels[train.y[j]]]
            + ([] if not train.flipped.any() else ["yes" if train.flipped[j] else "no"])
            + [f"{lead.scores[j]:+.4e}", f"{loss.scores[j]:.4f}"] for i, j in enumerate(top)]
    print(format_table(header, rows))
    held_out = f"; the {val.n} rows held out for validation are not scored" if val.n else ""
    if args.out is None:
        print(textwrap.fill(f"({train.n} training rows ranked{held_out}; --out DIR writes every row's "
                            f"scores to DIR/{apps.SCORES_FILE})", WIDTH))
        return
    names = np.array(labels, dtype=object)[train.y]
    path = apps.save_scores(args.out, results, train.rows, names,
                            train.flipped if train.flipped.any() else None, overwrite=args.force)
    print(textwrap.fill(f"scores of all {train.n} training rows, most suspicious first, written to {path}"
                        f"{held_out}", WIDTH))


def _print_protocols(fit_: apps.Fit, train: Any, held_out: Any, args: argparse.Namespace) -> None:
    from .. import apps
    from ..apps.demo import format_table, prepare_data
    from ..apps.detection import MIN_RECOVERY_GAP

    val, test = _split_held_out(held_out)
    true = prepare_data(args.dataset, args.n, args.model, 0.0, 0.2, args.seed, args.pca)[0].y  # as given
    results, accs = apps.detection_protocols(fit_, train.flipped, true, val.X, val.y, test.X, test.y,
                                             _chosen(fit_, args), seed=args.seed,
                                             progress=progress_from_args(args))
    qs = results[0].fractions
    print("\n" + textwrap.fill(
        f"Detection protocols: each ranking by self-influence, by influence on the clean validation set "
        f"({val.n} points), and relabel-and-retrain: inspect the top q of the training set, correct the "
        f"flipped labels found there, retrain; test accuracy on {test.n} points: {accs['noisy']:.3f} "
        f"with the noisy labels, {accs['clean']:.3f} with all corrected.", WIDTH))
    print("\nAUROC, and the fraction of the flipped labels corrected after inspecting the top q")
    print(format_table(["ranking", "AUROC"] + [f"fixed@{q:.0%}" for q in qs],
                       [[r.ranking, f"{r.auroc:.3f}"] + [f"{x:.2f}" for x in r.fixed] for r in results]))
    print("\nTest accuracy after retraining on the corrected labels")
    print(format_table(["ranking"] + [f"acc@{q:.0%}" for q in qs],
                       [[r.ranking] + [f"{x:.3f}" for x in r.test_accuracy] for r in results]))
    recovered = [f"recovered@{q:.0%}" for q in qs]
    if all(np.isnan(r.recovered).all() for r in results):
        print("\n" + textwrap.fill(
            f"{', '.join(recovered)} (accuracy recovered) not reported: correcting every flipped label "
            f"changes the test accuracy by fewer than {MIN_RECOVERY_GAP} of {test.n} points", WIDTH))
    else:
        print("\nAccuracy recovered, (acc@q − acc noisy) / (acc all corrected − acc noisy)")
        print(format_table(["ranking"] + recovered,
                           [[r.ranking] + ["—" if np.isnan(x) else f"{x:.2f}" for x in r.recovered]
                            for r in results]))
    best = max(results, key=lambda r: r.auroc)
    print(f"highest AUROC: {best.ranking} ({best.auroc:.3f})")


def _print_curves(fit_: apps.Fit, train: Any, held_out: Any, args: argparse.Namespace) -> None:
    from .. import apps
    from ..apps.demo import format_table

    val, test = _split_held_out(held_out)
    ks = [k for k in args.ks if k < train.n]
    if not ks:
        raise InvalidInputError(f"--ks: every count must be below the {train.n} training points")
    curves = apps.removal_curves(fit_, val.X, val.y, test.X, test.y, ks, _chosen(fit_, args),
                                 n_random=args.random_trials, flipped=train.flipped, seed=args.seed,
                                 progress=progress_from_args(args))
    print(f"\nRemoval curves: test accuracy ({test.n} points) after removing the top k by I_j(f) "
          f"(f = mean loss on {val.n} validation points) and retraining; last columns: the change of f at "
          f"k = {ks[-1]}, predicted −Σ I_j(f) and actual")
    rows = [[c.method] + [f"{a:.3f}" for a in c.test_accuracy]
            + ["—" if np.isnan(c.predicted_val_change[-1]) else f"{c.predicted_val_change[-1]:+.4f}",
               f"{c.val_loss_change[-1]:+.4f}"] for c in curves]
    print(format_table(["ranking"] + [f"k={k}" for k in ks] + ["predicted Δf", "actual Δf"], rows))
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import removal_curves_figure

        _print_figures(removal_curves_figure(curves, out_dir))


def run_remove(args: argparse.Namespace) -> int:
    from .. import apps
    from ..apps.demo import format_table

    train, val, fit_ = _setup(args)
    if args.ks is not None:
        _print_curves(fit_, train, val, args)
        return 0
    k = args.k if args.k is not None else max(1, round(0.05 * train.n))
    results = apps.remove_harmful(fit_, val.X, val.y, k, _chosen(fit_, args), n_random=args.random_trials,
                                  seed=args.seed, progress=progress_from_args(args))
    f0 = apps.mean_loss(fit_.problem, fit_.theta_final, val.X, val.y)
    print(f"\nRemoving the k = {k} training points most harmful to the validation loss "
          f"(f = {f0:.4f} before), retraining with the same procedure")
    known = train.flipped.any()
    rows = []
    for r in results:
        predicted = "—" if np.isnan(r.predicted_change) else f"{r.predicted_change:+.5f}"
        rows.append([r.method, predicted, f"{r.actual_change:+.5f}"]
                    + ([f"{int(train.flipped[r.removed].sum())}/{k}"] if known else []))
    print(format_table(["method", "predicted Δf", "actual Δf"] + (["flipped among removed"] if known else []),
                       rows))
    lead = results[0]
    print(f"rows removed by {lead.method} (0-based data rows of {_source(args)}): "
          f"{_rows(train, lead.removed)}")
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import removal_bars

        _print_figures(removal_bars(results, out_dir, force=args.force))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from .. import apps
    from ..apps.demo import format_table

    train, val, fit_ = _setup(args)
    if args.methods is None and args.method not in fit_.available_methods():
        raise InvalidInputError(f"--method {args.method} needs a SAM fixed point: {fit_.fixed_point_note}")
    methods = [args.method] if args.methods is None else _chosen(fit_, args)
    x, y = val.X[args.index], int(val.y[args.index])
    proba = fit_.problem.model.predict_proba(fit_.theta_final, x[None, :])[0]
    predicted, names = int(proba.argmax()), train.label_names()
    print(f"\nValidation point {args.index} (row {int(val.rows[args.index])} of {_source(args)}): label "
          f"{names[y]}, predicted {names[predicted]} (p(label) = {proba[y]:.3f})")
    print("I_j = influence of training point j on this point's loss at its label; removing j changes that "
          "loss by about −I_j.")
    if predicted == y:
        titles = (f"Proponents (support the label {names[y]}, which is also the predicted class: removing "
                  f"them raises the loss)",
                  "Opponents (pull towards other classes: removing them lowers the loss)")
    else:  # misclassified: the proponents argue for the true label, against the prediction
        titles = (f"Proponents (support the true label {names[y]} against the predicted class "
                  f"{names[predicted]}: removing them raises the loss)",
                  f"Opponents (pull away from the label {names[y]}, e.g. towards the predicted class "
                  f"{names[predicted]}: removing them lowers the loss)")
    known = train.flipped.any()
    explanations = [apps.explain_prediction(fit_, x, y, args.k, method) for method in methods]
    for expl in explanations:
        for title, idx in zip(titles, (expl.proponents, expl.opponents)):
            print(f"\n{title}; method {expl.method}")
            rows = [[str(int(train.rows[j])), names[train.y[j]]]
                    + (["yes" if train.flipped[j] else "no"] if known else []) + [f"{expl.influence[j]:+.3e}"]
                    for j in idx]
            print(format_table(["row", "label"] + (["flipped"] if known else []) + ["I_j"], rows))
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import explanation_2d

        paths = explanation_2d(train.X, train.y, x, explanations[0], out_dir, force=args.force)
        if not paths:
            print("(the proponent/opponent figure needs 2-D data: --dataset synthetic2d)")
        _print_figures(paths)
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from .. import apps
    from ..apps.demo import format_table, prepare_data
    from ..models import build_model
    from ..objective import Problem

    _check_common(args)
    if not 0 < args.val_fraction < 1:
        raise InvalidInputError(f"--val-fraction must lie in (0, 1), got {args.val_fraction}")
    for name in ("max_trainings",):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.grid < 0 or args.grid == 1:
        raise InvalidInputError(f"--grid must be 0 (no grid) or >= 2, got {args.grid}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    bounds = ((1e-3, check_positive("--rho-max", args.rho_max)), (1e-4, 1.0))
    if not bounds[0][0] < args.rho_max:
        raise InvalidInputError(f"--rho-max must exceed 1e-3, got {args.rho_max}")
    if not (bounds[0][0] <= args.rho <= bounds[0][1] and bounds[1][0] <= args.weight_decay <= bounds[1][1]):
        raise InvalidInputError(f"the start --rho {args.rho} --weight-decay {args.weight_decay} must lie in "
                                f"rho [1e-3, {args.rho_max}], weight decay [1e-4, 1]")
    train, val = prepare_data(args.dataset, args.n, args.model, args.flip, args.val_fraction, args.seed,
                              args.pca)
    if args.batch_size is not None and args.batch_size > train.n:
        raise InvalidInputError(f"--batch-size must be <= the {train.n} training points, got "
                                f"{args.batch_size}")
    model = build_model(args.model, train.p, train.n_classes, args.hidden)
    problem = Problem(model, train.X, train.y)
    optimizer = optimizer_from_args(args)  # its weight decay is the tuned λ's start
    procedure = {"rule": args.rule, "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
                 "method": args.hypergradient}
    print(f"{train.name}: n = {train.n} training ({_noise(train)}), {val.n} validation, "
          f"{model!r}, d = {problem.d}; rule {args.rule}, η = {args.lr}, T = {args.steps}"
          + ("" if args.batch_size is None else f", batch size {args.batch_size}"))
    _print_label_map(train)
    result = apps.tune(problem, val.X, val.y, optimizer, args.rho, args.weight_decay, bounds=bounds,
                       max_trainings=args.max_trainings, progress=progress_from_args(args), **procedure)
    start = result.trials[0]
    kinds = sorted({t.method for t in result.trials})
    print(f"\nTuning ρ and λ on the mean validation loss f by L-BFGS-B in log space, hypergradients: "
          f"{', '.join(kinds)}")
    print(format_table(["", "ρ", "λ", "f", "trainings"], [
        ["start", f"{start.rho:.4g}", f"{start.weight_decay:.4g}", f"{start.loss:.6f}", "1"],
        ["tuned", f"{result.rho:.4g}", f"{result.weight_decay:.4g}", f"{result.loss:.6f}",
         str(result.trainings)]]))
    print(f"search: {result.message}")
    for name, side, bound in result.bounds_hit():
        symbol, remedy = {"rho": ("ρ", "raise --rho-max" if side == "upper" else "ρ < 1e-3 is not searched"),
                          "weight_decay": ("λ", "λ is searched in [1e-4, 1]")}[name]
        print(f"note: the tuned {symbol} sits on its {side} bound {bound:g}: the optimum may lie beyond the "
              f"searched range ({remedy})")
    trial, fd, err = apps.check_hypergradient(problem, val.X, val.y, optimizer, result.rho,
                                              result.weight_decay, **procedure)
    print(f"hypergradient at the tuned point ({trial.method}): ∂f/∂ρ = {trial.grad_rho:+.6e}, "
          f"∂f/∂λ = {trial.grad_weight_decay:+.6e}; central differences of retraining: {fd[0]:+.6e}, "
          f"{fd[1]:+.6e}; max relative difference {err:.1e}")
    grid = None
    if args.grid:
        rhos = np.geomspace(bounds[0][0], bounds[0][1], args.grid)
        lams = np.geomspace(bounds[1][0], bounds[1][1], args.grid)
        grid = apps.grid_search(problem, val.X, val.y, optimizer, rhos, lams,
                                progress=progress_from_args(args), **procedure)
        c = apps.compare_with_grid(result, grid)
        print(f"grid search, {args.grid} × {args.grid} geometric points: best ρ = {c.rho:.4g}, "
              f"λ = {c.weight_decay:.4g}, f = {c.loss:.6f} ({grid.trainings} trainings)")
        print(f"tuned vs grid: |Δ log ρ| = {c.d_log_rho:.2f} (grid step {c.step_rho:.2f}), |Δ log λ| = "
              f"{c.d_log_weight_decay:.2f} (grid step {c.step_weight_decay:.2f}): {c.verdict()} (f tuned − "
              f"f grid = {c.loss_difference:+.2e}); trainings {result.trainings} vs {grid.trainings}")
    out_dir = _figure_dir(args)
    if out_dir and grid is not None:
        from ..apps.plotting import tuning_path

        _print_figures(tuning_path(result, grid, out_dir, force=args.force))
    return 0


def run_edit(args: argparse.Namespace) -> int:
    from .. import apps

    train, val, fit_ = _setup(args)
    index = args.index
    if index is None:
        index = apps.first_misclassified(fit_, val.X, val.y)
        if index is None:
            raise InvalidInputError("every validation point is classified correctly: choose one with --index")
    e = apps.edit_prediction(fit_, val.X, val.y, index, args.target, args.method, args.max_remove)
    names = train.label_names()
    print(f"\nEditing validation point {index} (row {int(val.rows[index])} of {_source(args)}, label "
          f"{names[int(val.y[index])]}): make class {_cls(names, e.target)} beat class "
          f"{_cls(names, e.rival)}, margin m = z_{e.target} − z_{e.rival} = {e.margin_before:+.4f} now "
          f"(method {e.method})")
    flipped = f" ({int(train.flipped[e.removed].sum())} of them flipped)" if train.flipped.any() else ""
    print(f"removing {len(e.removed)} training points, rows {_rows(train, e.removed)} of {_source(args)}"
          f"{flipped}, is predicted to give m = {e.predicted_margin:+.4f}")
    print(f"retrained without them: m = {e.actual_margin:+.4f}, predicted class {e.predicted_label} "
          f"({'edit succeeded' if e.succeeded else 'edit FAILED'}); collateral: "
          f"{e.collateral_changed:.1%} of the other validation predictions changed, accuracy "
          f"{e.accuracy_before:.3f} → {e.accuracy_after:.3f}")
    return 0
