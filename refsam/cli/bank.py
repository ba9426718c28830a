"""``refsam bank`` and ``refsam lds``: build exact counterfactual banks (on a cluster's array jobs too)
and grade any implementation's scores on them by the linear datamodeling score (docs/lds.md).

    refsam bank --out DIR [data, model, training options] [--subset-ratio A --subsets K --kind K
                --output O --shard I/N --jobs J --export FORMAT]
    refsam bank merge DIR [--out DIR2] [--export FORMAT]     join DIR's shard-*.npz files
    refsam lds --bank DIR --scores FILE [--key NAME] [--negate] [--no-exact]

``refsam lds`` prints a table: the scores' LDS (mean over queries) and the spread of the per-query values
(10th percentile, median, 90th percentile), beside the exact influence's LDS on the same bank (the closed
form at a root, the trajectory adjoint for a run; rebuilt from the recipe the bank stores and checked
against its fingerprint). Errors the user can fix end with one line and exit status 2.

Building the parser imports no numerical code (its choices are copies in `choices`); each command
imports the library when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .cases import add_jobs_argument, add_progress_argument, check_jobs, progress_from_args
from .choices import BANK_KINDS, BANK_OUTPUTS, BANK_TARGETS, MODEL_NAMES, PEER_FORMATS, RULES

if TYPE_CHECKING:  # the library loads when the command runs, not when the parser is built (--help)
    import numpy as np

    from ..apps.banks import BankRecipe
    from ..kit.lds import LDSResult


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bank", help="build an exact counterfactual bank (random subsets retrained), "
                                           "or `bank merge DIR` to join its shards")
    p.add_argument("action", nargs="*", metavar="merge DIR",
                   help="`merge DIR [DIR ...]`: join the shard files in DIR into one bank")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="bank directory (build: required; merge: default the first DIR)")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic, synthetic2d, breast_cancer, digits (need scikit-learn), or a .csv/.npz "
                        "path; 80%% training points, 20%% queries (default synthetic)")
    p.add_argument("--n", type=int, default=None, help="rows to use (default: 250 synthetic, all otherwise)")
    p.add_argument("--pca", type=int, default=None, help="project on this many principal components")
    p.add_argument("--model", choices=MODEL_NAMES, default="logistic")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--rule", choices=RULES, default="sam")
    p.add_argument("--rho", type=float, default=0.05, help="SAM radius ρ (default 0.05)")
    p.add_argument("--weight-decay", type=float, default=1e-2,
                   help="λ, the SGD's weight decay, added at the unperturbed point (default 1e-2)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate η (default 0.5)")
    p.add_argument("--steps", type=int, default=300, help="SAM steps T (default 300)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--seed", type=int, default=0, help="data split and training seed (default 0)")
    p.add_argument("--target", choices=BANK_TARGETS, default="root",
                   help="root: the SAM fixed point, re-solved (full batch); run: the recorded run, replayed "
                        "(default root)")
    p.add_argument("--subset-ratio", type=float, default=0.5, help="kept fraction α (default 0.5)")
    p.add_argument("--subsets", type=int, default=100, help="subsets K (default 100)")
    p.add_argument("--kind", choices=BANK_KINDS, default="weights",
                   help="weights: w = 1_S in the same objective (default); retrain: from scratch on S")
    p.add_argument("--output", choices=BANK_OUTPUTS, default="loss", help="test loss (default) or margin")
    p.add_argument("--bank-seed", type=int, default=0, help="seed of the subsets (default 0)")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="--kind retrain --target run: training seeds whose outputs are averaged (default: "
                        "the run's --seed)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="compute shard I of N only (0-based; a cluster's array job), written as "
                        "DIR/shard-I-of-N.*; join them with `refsam bank merge DIR`")
    p.add_argument("--export", default=None, choices=PEER_FORMATS,
                   help="also write the bank in this tool's format into DIR/FORMAT/")
    p.add_argument("--force", action="store_true", help="replace files in DIR that refsam did not write")
    add_jobs_argument(p)
    add_progress_argument(p, "progress lines on stderr: the training, then the subsets")
    p.set_defaults(func=run_bank)

    p = subparsers.add_parser("lds", help="grade influence scores on a bank by the linear datamodeling "
                                          "score, beside the exact influence's")
    p.add_argument("--bank", required=True, metavar="DIR", help="a bank directory (refsam bank)")
    p.add_argument("--scores", required=True, metavar="FILE",
                   help=".npy (n_train, n_queries), or .npz holding one such array (or name it with --key)")
    p.add_argument("--key", default=None, help="the array of an .npz holding several")
    p.add_argument("--negate", action="store_true",
                   help="negate the scores first (dattri's and TRAK's sign: helpfulness = −∂f/∂w)")
    p.add_argument("--no-exact", action="store_true", help="skip the exact influence's LDS")
    add_progress_argument(p, "progress lines on stderr while the exact influence's run is rebuilt")
    p.set_defaults(func=run_lds)


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InvalidInputError(f"--shard must be I/N with integers, e.g. 3/10, got {text!r}") from None
    if not 0 <= i < n:
        raise InvalidInputError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise InvalidInputError(f"--seeds must be a comma-separated list of ints, got {text!r}")
    return seeds


def _recipe(args: argparse.Namespace) -> BankRecipe:
    """The recipe, with the bank's own settings checked before any data is loaded or model trained."""
    from ..apps.banks import BankRecipe

    for name in ("steps", "hidden"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.subsets < 2:
        raise InvalidInputError(f"--subsets must be >= 2, got {args.subsets}")
    if not 0.0 < args.subset_ratio <= 1.0:
        raise InvalidInputError(f"--subset-ratio must lie in (0, 1], got {args.subset_ratio}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    return BankRecipe(dataset=args.dataset, n=args.n, pca=args.pca, model=args.model, hidden=args.hidden,
                      rule=args.rule, rho=args.rho, weight_decay=args.weight_decay, lr=args.lr,
                      steps=args.steps, batch_size=args.batch_size, seed=args.seed, target=args.target)


def run_bank(args: argparse.Namespace) -> int:
    from ..apps.banks import build_target
    from ..ground_truth.bank import counterfactual_bank

    check_jobs(args)
    if args.action:
        if args.action[0] != "merge" or len(args.action) < 2:
            raise InvalidInputError(f"`refsam bank` takes `merge DIR [DIR ...]` or no positional argument, "
                                    f"got {' '.join(args.action)!r}")
        return _merge(args.action[1:], args)
    if args.out is None:
        raise InvalidInputError("--out DIR is required: the directory the bank (or shard) is written to")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InvalidInputError(f"--out {args.out!r} is a file; give a directory")
    recipe = _recipe(args)
    shard = _shard(args.shard)
    seeds = _seeds(args.seeds)
    start = time.perf_counter()
    progress = progress_from_args(args)
    fitted, target, X_test, y_test = build_target(recipe, progress=progress)
    bank = counterfactual_bank(fitted.problem, fitted.sam, target, X_test, y_test,
                               subset_ratio=args.subset_ratio, n_subsets=args.subsets, kind=args.kind,
                               output=args.output, seed=args.bank_seed, seeds=seeds, n_jobs=args.jobs,
                               shard=shard, progress=progress)
    bank = replace(bank, meta={**bank.meta, "recipe": recipe.to_json()})  # lets `refsam lds` rebuild it
    path = bank.save(args.out, overwrite=args.force)
    what = "bank" if shard is None else f"shard {shard[0]}/{shard[1]} (subsets {bank.meta['subsets']})"
    print(f"{what}: {bank.n_subsets} subsets of {bank.meta['subset_size']} of n = {bank.masks.shape[1]} "
          f"training points, {bank.outputs.shape[1]} queries, kind {args.kind}, output {args.output}, "
          f"target {args.target}; {time.perf_counter() - start:.1f} s; written to {path}")
    if shard is None:
        _export(bank, args.out, args.export)
    return 0


def _export(bank: Any, out: str, fmt: str | None) -> None:
    from ..kit.peers import export_bank

    if fmt:
        paths = export_bank(bank, os.path.join(out, fmt), fmt)
        print(f"{fmt} files: {', '.join(paths)}")


def _merge(directories: list[str], args: argparse.Namespace) -> int:
    from ..ground_truth.bank import merge_bank_shards

    sources: list[Any] = []
    for directory in directories:
        if not os.path.isdir(directory):
            raise InvalidInputError(f"`refsam bank merge`: {directory!r} is not a directory of bank shards")
        sources += sorted(os.path.join(directory, f) for f in os.listdir(directory)
                          if f.startswith("shard-") and f.endswith(".npz"))
    if not sources:
        raise InvalidInputError(f"no bank shards (shard-*.npz) in {', '.join(directories)}")
    out = args.out or directories[0]
    bank = merge_bank_shards(sources, directory=out, overwrite=args.force)
    where = os.path.join(out, "bank.npz")
    print(f"merged {len(sources)} shards: {bank.n_subsets} subsets, written to {where}")
    _export(bank, out, args.export)
    return 0


def _read_scores(path: str, key: str | None) -> np.ndarray:
    import numpy as np

    from ..data.archive import SingleArrayError, read_npz

    if not os.path.isfile(path):
        raise InvalidInputError(f"scores file {path!r} does not exist")
    try:
        arrays = read_npz(path)
    except SingleArrayError:
        try:
            return np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read scores file {path!r} without pickle: {exc}") from exc
    except InvalidInputError as exc:
        raise InvalidInputError(f"scores file {path!r} is not a readable .npy or .npz ({exc})") from exc
    if key is not None:
        if key not in arrays:
            raise InvalidInputError(f"scores file {path!r} has no array {key!r}; it has {sorted(arrays)}")
        return np.asarray(arrays[key])
    if len(arrays) != 1:
        raise InvalidInputError(f"scores file {path!r} holds {len(arrays)} arrays {sorted(arrays)}: name one "
                                f"with --key")
    return np.asarray(next(iter(arrays.values())))


def _row(name: str, result: LDSResult) -> str:
    p10, median, p90 = result.spread
    extra = f"  ({result.undefined} queries undefined)" if result.undefined else ""
    return f"{name:<24} {result.mean:>8.4f} {p10:>8.4f} {median:>8.4f} {p90:>8.4f}{extra}"


def run_lds(args: argparse.Namespace) -> int:
    import numpy as np

    from ..ground_truth.bank import load_bank
    from ..kit.lds import lds

    bank = load_bank(args.bank)
    scores = _read_scores(args.scores, args.key)
    if scores.dtype.kind not in "fiu":
        raise InvalidInputError(f"scores in {args.scores!r} have dtype {scores.dtype}, expected numbers")
    scores = -scores.astype(np.float64) if args.negate else scores.astype(np.float64)
    result = lds(scores, bank)  # shape errors name the expected (n_train, n_queries)
    m = bank.meta
    print(f"bank {args.bank}: {bank.n_subsets} subsets keeping {m['subset_size']} of "
          f"{bank.masks.shape[1]} points (subset_ratio {m['subset_ratio']}), {bank.outputs.shape[1]} "
          f"queries, kind {m['kind']}, output {m['output']}")
    print(f"{'scores':<24} {'LDS':>8} {'p10':>8} {'median':>8} {'p90':>8}")
    print(_row(os.path.basename(args.scores) + (" (negated)" if args.negate else ""), result))
    if not args.no_exact:
        _print_exact(bank, args)
    return 0


def _print_exact(bank: Any, args: argparse.Namespace) -> None:
    from ..apps.banks import BankRecipe, build_target, exact_method, method_scores
    from ..ground_truth.bank import with_context
    from ..kit.lds import lds

    recipe_json = bank.meta.get("recipe")
    if recipe_json is None:
        print("exact influence: not available (the bank stores no recipe: built by the API or imported)")
        return
    fitted, target, X_test, y_test = build_target(BankRecipe.from_json(recipe_json),
                                                  progress=progress_from_args(args))
    with_context(bank, fitted.problem, fitted.sam, target, X_test, y_test)  # refuses another problem
    method = exact_method(target)
    scores = method_scores(fitted, method, X_test, y_test, bank.meta["output"])
    if scores is None:
        print(f"exact influence: not available for output {bank.meta['output']!r} of this model")
        return
    print(_row(f"exact ({method})", lds(scores, bank)))
    sys.stdout.flush()
