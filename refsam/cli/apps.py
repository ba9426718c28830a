"""``refsam demo | detect | remove | explain``: the applications on the command line.

* ``demo``    the whole pipeline with every method beside its ground truth (:mod:`refsam.demo`)
* ``detect``  mislabeled-data detection by self-influence, against the loss and random baselines
* ``remove``  remove the k points most harmful to the validation loss per method, retrain, compare
* ``explain`` proponents and opponents of one validation prediction

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
    p.add_argument("--methods", default=",".join(apps.METHODS),
                   help=f"comma-separated influence methods (default all: {','.join(apps.METHODS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_FIGURE_DIR,
                   help=f"directory for figures (default ./{DEFAULT_FIGURE_DIR}; needs matplotlib)")
    p.add_argument("--no-figures", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


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
    p.set_defaults(func=run_detect)

    p = subparsers.add_parser("remove", help="remove the k points most harmful to the validation loss, "
                                             "retrain, and compare actual with predicted change")
    _add_common(p)
    p.add_argument("--k", type=int, default=None, help="points to remove (default 5%% of the training set)")
    p.add_argument("--random-trials", type=int, default=3, help="random removals for reference (3)")
    p.set_defaults(func=run_remove)

    p = subparsers.add_parser("explain", help="proponents and opponents of one validation prediction")
    _add_common(p)
    p.add_argument("--index", type=int, default=0, help="validation point to explain (default 0)")
    p.add_argument("--k", type=int, default=5, help="proponents and opponents to list (default 5)")
    p.add_argument("--method", type=_method, default="closed_form", metavar="METHOD",
                   help=f"influence method, one of {','.join(apps.METHODS)} (default closed_form; 0.1's "
                        f"names such as sam-full are accepted)")
    p.set_defaults(func=run_explain)


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
    if args.command == "detect" and args.flip == 0:
        raise InvalidInputError("no flipped labels to detect: use --flip > 0")
    check_positive("--lr", args.lr)
    check_nonnegative("--rho", args.rho)
    check_nonnegative("--weight-decay", args.weight_decay)
    _methods(args.methods)
    SGDMomentum(args.momentum, args.dampening, args.nesterov)
    if not args.no_figures:
        check_output_directory("--out", args.out)


def _setup(args: argparse.Namespace) -> tuple[Any, Any, apps.Fit]:
    """Data, problem and fit shared by detect/remove/explain. Returns (train, val, fit)."""
    _check_common(args)
    train, val = prepare_data(args.dataset, args.n, args.model, args.flip, 0.2, args.seed, args.pca)
    if args.command == "explain" and not 0 <= args.index < val.n:  # before training
        raise InvalidInputError(f"--index must lie in 0..{val.n - 1} (validation points), got {args.index}")
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
    train, _, fit_ = _setup(args)
    if not train.flipped.any():  # --flip > 0 so small that no label flipped
        raise InvalidInputError(f"--flip {args.flip} flips no label of {train.n}: use a larger --flip")
    results = apps.detect_mislabeled(fit_, train.flipped, _chosen(fit_, args), seed=args.seed,
                                     progress=not args.quiet)
    print(f"\nDetection of {int(train.flipped.sum())} flipped labels among {train.n} training points "
          f"(score −I_j(ℓ_j); baselines: training loss, random)")
    rows = [[r.method] + [f"{v:.3f}" for v in r.metrics.values()] + [f"{r.seconds:.2f}"] for r in results]
    print(format_table(["method"] + list(results[0].metrics) + ["time [s]"], rows))
    out_dir = _figure_dir(args)
    if out_dir:
        from ..apps.plotting import detection_curves

        _print_figures(detection_curves(results, train.flipped, out_dir))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    train, val, fit_ = _setup(args)
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
