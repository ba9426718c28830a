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
Figures go to ``--out`` when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from .. import apps
from ..apps.demo import (
    MODELS,
    QUICK,
    DemoConfig,
    build_model,
    format_fixed_point,
    format_report,
    format_table,
    prepare_data,
    run_demo,
)
from ..apps.plotting import matplotlib_available
from ..errors import InvalidInputError
from ..objective import Problem
from ..sam import RULES, SAM
from ..training import SGDMomentum
from ..validation import check_nonnegative, check_output_directory, check_positive
from .cases import add_jobs_argument, check_jobs
from .train import add_momentum_arguments

DEFAULT_FIGURE_DIR = "refsam-figures"


def _add_common(p: Any, steps: int = 300) -> None:
    _add_training(p, steps)
    p.add_argument("--methods", default=",".join(apps.METHODS),
                   help=f"comma-separated influence methods (default all: {','.join(apps.METHODS)})")
    _add_output(p)


def _add_output(p: Any) -> None:
    p.add_argument("--out", default=DEFAULT_FIGURE_DIR,
                   help=f"directory for figures (default ./{DEFAULT_FIGURE_DIR}; needs matplotlib)")
    p.add_argument("--no-figures", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


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
    p.add_argument("--weight-decay", type=float, default=1e-2, help="λ, decoupled (default 1e-2)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate η (default 0.5)")
    p.add_argument("--steps", type=int, default=None, dest="steps_given",
                   help=f"full-batch SAM steps T (default {steps})")
    p.set_defaults(steps=steps)
    add_momentum_arguments(p)
    p.add_argument("--flip", type=float, default=0.10,
                   help="fraction of training labels flipped (default 0.1)")
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

    p = subparsers.add_parser("detect", help="rank training points by self-influence to find flipped labels")
    _add_common(p)
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
    _add_common(p)
    p.add_argument("--index", type=int, default=0, help="validation point to explain (default 0)")
    p.add_argument("--k", type=int, default=5, help="proponents and opponents to list (default 5)")
    p.add_argument("--method", type=_method, default="closed_form", metavar="METHOD",
                   help=f"influence method, one of {','.join(apps.METHODS)} (default closed_form; 0.1's "
                        f"names such as sam-full are accepted)")
    p.set_defaults(func=run_explain)

    p = subparsers.add_parser("edit", help="remove the fewest training points predicted to change one "
                                           "held-out prediction, retrain, and report predicted vs actual")
    _add_common(p)
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
    p.add_argument("--hypergradient", choices=apps.TUNING_METHODS, default="auto",
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
    try:
        return apps.resolve_method(text).name
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be one of {','.join(apps.METHODS)}, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    try:
        methods = tuple(apps.resolve_method(m).name for m in names)
    except ValueError:
        methods = ()
    if not methods:
        raise InvalidInputError(f"--methods must be a comma-separated subset of {','.join(apps.METHODS)}, "
                         f"got {text!r}")
    return methods


def _figure_dir(args: argparse.Namespace) -> str | None:
    """The figure directory, or None (and a note on stdout) when figures are off or impossible."""
    if args.no_figures:
        return None
    if not matplotlib_available():
        print("matplotlib is not installed: no figures (pip install matplotlib)")
        return None
    return check_output_directory("--out", args.out)


def _print_figures(paths: list[str]) -> None:
    if paths:
        print("Figures written:")
        for path in paths:
            print(f"  {path}")


def _check_common(args: argparse.Namespace) -> None:
    """Every shared argument checked before any data is loaded or any model trained."""
    if args.steps_given is not None:
        args.steps = args.steps_given
    for name in ("steps", "hidden"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.flip < 1:
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
    if args.command == "detect" and getattr(args, "protocols", False) and args.flip == 0:
        raise InvalidInputError("no flipped labels to detect: use --flip > 0")
    if args.command == "detect" and args.flip == 0:
        raise InvalidInputError("no flipped labels to detect: use --flip > 0")
    check_positive("--lr", args.lr)
    check_nonnegative("--rho", args.rho)
    check_nonnegative("--weight-decay", args.weight_decay)
    if hasattr(args, "methods"):
        _methods(args.methods)
    SGDMomentum(args.momentum, args.dampening, args.nesterov)
    if not args.no_figures:
        check_output_directory("--out", args.out)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, apps.Fit]:
    """Data, problem and fit shared by detect/remove/explain. Returns (train, val, fit)."""
    _check_common(args)
    train, val = prepare_data(args.dataset, args.n, args.model, args.flip, 0.2, args.seed, args.pca)
    if args.command in ("explain", "edit") and args.index is not None and not 0 <= args.index < val.n:
        raise InvalidInputError(f"--index must lie in 0..{val.n - 1} (validation points), got {args.index}")
    if args.command == "edit" and args.target is not None and not 0 <= args.target < train.n_classes:
        raise InvalidInputError(f"--target must be a class in 0..{train.n_classes - 1}, got {args.target}")
    model = build_model(args.model, train.p, train.n_classes, args.hidden)
    problem = Problem(model, train.X, train.y, weight_decay=args.weight_decay)
    sam = SAM(args.rho, args.rule)
    if not args.quiet:
        print(f"training {model!r} on {train.name}: {train.n} points, {val.n} validation, "
              f"{int(train.flipped.sum())} labels flipped; {sam!r}", file=sys.stderr, flush=True)
    fit_ = apps.fit(problem, sam, args.lr, args.steps, seed=args.seed, momentum=args.momentum,
                    dampening=args.dampening, nesterov=args.nesterov)
    print(f"{train.name}: n = {train.n} training ({int(train.flipped.sum())} flipped), {val.n} validation, "
          f"{model!r}, d = {problem.d}; {sam!r}, λ = {args.weight_decay}, η = {args.lr}, T = {args.steps}")
    print(format_fixed_point(fit_, None))
    return train, val, fit_


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
    _check_common(args)
    check_jobs(args)
    given = {"n": args.n, "steps": args.steps_given, "subset": args.subset}  # None: not on the command line
    sizes: dict[str, Any] = {  # --quick fills only the sizes that were not given
        key: (QUICK[key] if args.quick else default) if given[key] is None else given[key]
        for key, default in (("n", None), ("steps", 300), ("subset", 20))}
    config = DemoConfig(dataset=args.dataset, n=sizes["n"], pca=args.pca, model=args.model,
                        hidden=args.hidden, rule=args.rule, rho=args.rho, weight_decay=args.weight_decay,
                        lr=args.lr, steps=sizes["steps"], flip_fraction=args.flip,
                        subset=sizes["subset"],
                        seed=args.seed, methods=_methods(args.methods),
                        out_dir=args.out if not args.no_figures and matplotlib_available() else None,
                        progress=not args.quiet, momentum=args.momentum, dampening=args.dampening,
                        nesterov=args.nesterov, n_jobs=args.jobs).validate()  # every argument checked first
    result = run_demo(config)
    print(format_report(result))
    if not args.no_figures and not matplotlib_available():  # said after the work, where figures would be
        print("matplotlib is not installed: no figures (pip install matplotlib)")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    train, val, fit_ = _setup(args)
    if not train.flipped.any():  # --flip > 0 so small that no label flipped
        raise InvalidInputError(f"--flip {args.flip} flips no label of {train.n}: use a larger --flip")
    results = apps.detect_mislabeled(fit_, train.flipped, _chosen(fit_, args), seed=args.seed,
                                     progress=not args.quiet)
    print(f"\nDetection of {int(train.flipped.sum())} flipped labels among {train.n} training points "
          f"(score −I_j(ℓ_j); baselines: training loss, random)")
    rows = [[r.method] + [f"{v:.3f}" for v in r.metrics.values()] + [f"{r.seconds:.2f}"] for r in results]
    print(format_table(["method"] + list(results[0].metrics) + ["time [s]"], rows))
    if args.protocols:
        _print_protocols(fit_, train, val, args)
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import detection_curves

        _print_figures(detection_curves(results, train.flipped, out_dir))
    return 0


def _print_protocols(fit_: apps.Fit, train: Any, held_out: Any, args: argparse.Namespace) -> None:
    val, test = _split_held_out(held_out)
    true = prepare_data(args.dataset, args.n, args.model, 0.0, 0.2, args.seed, args.pca)[0].y  # unflipped
    results, accs = apps.detection_protocols(fit_, train.flipped, true, val.X, val.y, test.X, test.y,
                                             _chosen(fit_, args), seed=args.seed, progress=not args.quiet)
    qs = results[0].fractions
    print(f"\nDetection protocols: self-influence, influence on the clean validation set ({val.n} points), "
          f"and "
          f"relabel-and-retrain (inspect the top q, correct the flipped labels found, retrain; accuracy on "
          f"{test.n} test points: {accs['noisy']:.3f} noisy, {accs['clean']:.3f} all corrected)")
    header = (["ranking", "AUROC"] + [f"fixed@{q:.0%}" for q in qs] + [f"acc@{q:.0%}" for q in qs]
              + [f"recovered@{q:.0%}" for q in qs])
    rows = []
    for r in results:
        rows.append([r.ranking, f"{r.auroc:.3f}"] + [f"{x:.2f}" for x in r.fixed]
                    + [f"{x:.3f}" for x in r.test_accuracy]
                    + ["—" if np.isnan(x) else f"{x:.2f}" for x in r.recovered])
    print(format_table(header, rows))
    best = max(results, key=lambda r: r.auroc)
    print(f"highest AUROC: {best.ranking} ({best.auroc:.3f})")


def _print_curves(fit_: apps.Fit, train: Any, held_out: Any, args: argparse.Namespace) -> None:
    val, test = _split_held_out(held_out)
    ks = [k for k in args.ks if k < train.n]
    if not ks:
        raise InvalidInputError(f"--ks: every count must be below the {train.n} training points")
    curves = apps.removal_curves(fit_, val.X, val.y, test.X, test.y, ks, _chosen(fit_, args),
                                 n_random=args.random_trials, flipped=train.flipped, seed=args.seed,
                                 progress=not args.quiet)
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
    train, val, fit_ = _setup(args)
    if args.ks is not None:
        _print_curves(fit_, train, val, args)
        return 0
    k = args.k if args.k is not None else max(1, round(0.05 * train.n))
    results = apps.remove_harmful(fit_, val.X, val.y, k, _chosen(fit_, args), n_random=args.random_trials,
                                  seed=args.seed, progress=not args.quiet)
    f0 = apps.mean_loss(fit_.problem, fit_.theta_final, val.X, val.y)
    print(f"\nRemoving the k = {k} training points most harmful to the validation loss "
          f"(f = {f0:.4f} before), retraining with the same procedure")
    rows = []
    for r in results:
        n_flipped = int(train.flipped[r.removed].sum())
        predicted = "—" if np.isnan(r.predicted_change) else f"{r.predicted_change:+.5f}"
        rows.append([r.method, predicted, f"{r.actual_change:+.5f}", f"{n_flipped}/{k}"])
    print(format_table(["method", "predicted Δf", "actual Δf", "flipped among removed"], rows))
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import removal_bars

        _print_figures(removal_bars(results, out_dir))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    train, val, fit_ = _setup(args)
    if args.method not in fit_.available_methods():
        raise InvalidInputError(f"--method {args.method} needs a SAM fixed point: {fit_.fixed_point_note}")
    x, y = val.X[args.index], int(val.y[args.index])
    expl = apps.explain_prediction(fit_, x, y, args.k, args.method)
    proba = fit_.problem.model.predict_proba(fit_.theta_final, x[None, :])[0]
    print(f"\nValidation point {args.index}: label {y}, predicted {int(proba.argmax())} "
          f"(p(label) = {proba[y]:.3f}); method {args.method}")
    print("I_j = influence of training point j on this point's loss; removing j changes it by about −I_j.")
    sections = (("Proponents (support the prediction: removing them raises the loss)", expl.proponents),
                ("Opponents (oppose it: removing them lowers the loss)", expl.opponents))
    for title, idx in sections:
        print(f"\n{title}")
        rows = [[int(j), int(train.y[j]), "yes" if train.flipped[j] else "no", f"{expl.influence[j]:+.3e}"]
                for j in idx]
        print(format_table(["train index", "label", "flipped", "I_j"], rows))
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import explanation_2d

        paths = explanation_2d(train.X, train.y, x, expl, out_dir)
        if not paths:
            print("(the proponent/opponent figure needs 2-D data: --dataset synthetic2d)")
        _print_figures(paths)
    return 0


def run_tune(args: argparse.Namespace) -> int:
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
    if args.momentum and args.hypergradient == "closed_form":
        raise InvalidInputError("--hypergradient closed_form is for runs without momentum; use trajectory")
    train, val = prepare_data(args.dataset, args.n, args.model, args.flip, args.val_fraction, args.seed,
                              args.pca)
    if args.batch_size is not None and args.batch_size > train.n:
        raise InvalidInputError(f"--batch-size must be <= the {train.n} training points, got "
                                f"{args.batch_size}")
    model = build_model(args.model, train.p, train.n_classes, args.hidden)
    problem = Problem(model, train.X, train.y, weight_decay=args.weight_decay)
    procedure = {"rule": args.rule, "lr": args.lr, "steps": args.steps, "batch_size": args.batch_size,
                 "seed": args.seed, "momentum": args.momentum, "nesterov": args.nesterov,
                 "method": args.hypergradient}
    print(f"{train.name}: n = {train.n} training ({int(train.flipped.sum())} flipped), {val.n} validation, "
          f"{model!r}, d = {problem.d}; rule {args.rule}, η = {args.lr}, T = {args.steps}"
          + ("" if args.batch_size is None else f", batch size {args.batch_size}"))
    result = apps.tune(problem, val.X, val.y, args.rho, args.weight_decay, bounds=bounds,
                       max_trainings=args.max_trainings, progress=not args.quiet, **procedure)
    start = result.trials[0]
    kinds = sorted({t.method for t in result.trials})
    print(f"\nTuning ρ and λ on the mean validation loss f by L-BFGS-B in log space, hypergradients: "
          f"{', '.join(kinds)}")
    print(format_table(["", "ρ", "λ", "f", "trainings"], [
        ["start", f"{start.rho:.4g}", f"{start.weight_decay:.4g}", f"{start.loss:.6f}", "1"],
        ["tuned", f"{result.rho:.4g}", f"{result.weight_decay:.4g}", f"{result.loss:.6f}",
         str(result.trainings)]]))
    print(f"search: {result.message}")
    trial, fd, err = apps.check_hypergradient(problem, val.X, val.y, result.rho, result.weight_decay,
                                              **procedure)
    print(f"hypergradient at the tuned point ({trial.method}): ∂f/∂ρ = {trial.grad_rho:+.6e}, "
          f"∂f/∂λ = {trial.grad_weight_decay:+.6e}; central differences of retraining: {fd[0]:+.6e}, "
          f"{fd[1]:+.6e}; max relative difference {err:.1e}")
    grid = None
    if args.grid:
        rhos = np.geomspace(bounds[0][0], bounds[0][1], args.grid)
        lams = np.geomspace(bounds[1][0], bounds[1][1], args.grid)
        grid = apps.grid_search(problem, val.X, val.y, rhos, lams, progress=not args.quiet, **procedure)
        g_rho, g_lam, g_loss = grid.best
        res_rho, res_lam = grid.resolution()
        d_rho = abs(np.log(result.rho / g_rho))
        d_lam = abs(np.log(result.weight_decay / g_lam))
        within = d_rho <= res_rho and d_lam <= res_lam
        verdict = ("within the grid's resolution" if within else "NOT within the grid's resolution") + (
            "; the tuned f is at or below the grid's best" if result.loss <= g_loss
            else "; the tuned f is ABOVE the grid's best")
        print(f"grid search, {args.grid} × {args.grid} geometric points: best ρ = {g_rho:.4g}, "
              f"λ = {g_lam:.4g}, f = {g_loss:.6f} ({grid.trainings} trainings)")
        print(f"tuned vs grid: |Δ log ρ| = {d_rho:.2f} (grid step {res_rho:.2f}), |Δ log λ| = {d_lam:.2f} "
              f"(grid step {res_lam:.2f}): {verdict} (f tuned − f grid = {result.loss - g_loss:+.2e}); "
              f"trainings {result.trainings} vs {grid.trainings}")
    out_dir = _figure_dir(args)
    if out_dir and grid is not None:
        from ..apps.plotting import tuning_path

        _print_figures(tuning_path(result, grid, out_dir))
    return 0


def run_edit(args: argparse.Namespace) -> int:
    train, val, fit_ = _setup(args)
    index = args.index
    if index is None:
        predicted = np.argmax(fit_.problem.model.predict_proba(fit_.theta_final, val.X), axis=1)
        wrong = np.nonzero(predicted != val.y)[0]
        if wrong.size == 0:
            raise InvalidInputError("every validation point is classified correctly: choose one with --index")
        index = int(wrong[0])
    e = apps.edit_prediction(fit_, val.X, val.y, index, args.target, args.method, args.max_remove)
    print(f"\nEditing validation point {index} (label {int(val.y[index])}): make class {e.target} beat class "
          f"{e.rival}, margin m = z_{e.target} − z_{e.rival} = {e.margin_before:+.4f} now "
          f"(method {e.method})")
    print(f"removing {len(e.removed)} training points {e.removed.tolist()} "
          f"({int(train.flipped[e.removed].sum())} of them flipped) is predicted to give m = "
          f"{e.predicted_margin:+.4f}")
    print(f"retrained without them: m = {e.actual_margin:+.4f}, predicted class {e.predicted_label} "
          f"({'edit succeeded' if e.succeeded else 'edit FAILED'}); collateral: "
          f"{e.collateral_changed:.1%} of the other validation predictions changed, accuracy "
          f"{e.accuracy_before:.3f} → {e.accuracy_after:.3f}")
    return 0
