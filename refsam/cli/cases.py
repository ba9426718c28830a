"""``refsam export-cases`` and ``refsam check``: the oracle kit on the command line (docs/validating.md).

    refsam export-cases DIR                   write the reference suite (manifest.json + one .npz per case)
    refsam check DIR --scores FILE            compare an implementation's scores with it
    refsam check DIR --scores FILE --rtol 0.05 --min-spearman 0.9   grade an approximate implementation

``check`` prints a per-case table (pass/fail, max absolute and relative error, Spearman rank correlation,
top-k overlap) and a summary line
and exits 0 when every case passes, 1 when any fails, and 2 with a one-line error for a missing, corrupt
or tampered case or scores file.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import InvalidInputError
from .choices import TARGETS


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export-cases", help="write the reference cases for validating other "
                                                   "implementations")
    p.add_argument("directory", metavar="DIR", help="output directory (created if needed)")
    p.add_argument("--cases", default=None, metavar="PATTERN",
                   help="only cases whose id matches this shell pattern, e.g. 'logistic-*' (default: all)")
    p.add_argument("--force", action="store_true",
                   help="replace a manifest.json refsam did not write, or one listing cases this "
                        "export drops")
    add_jobs_argument(p)
    add_progress_argument(p, "a line on stderr per reference case written")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("check", help="compare an implementation's influence scores with the "
                                            "reference cases")
    p.add_argument("directory", metavar="DIR", help="a directory written by `refsam export-cases`")
    p.add_argument("--scores", required=True, metavar="FILE",
                   help=".npz with one (n_train, n_test) array per case id")
    p.add_argument("--target", choices=TARGETS, default="trajectory",
                   help="stored output to compare with (default: trajectory)")
    p.add_argument("--cases", default=None, metavar="PATTERN",
                   help="only cases whose id matches this shell pattern (default: all)")
    p.add_argument("--rtol", type=float, default=None, metavar="R",
                   help="grade at this relative tolerance instead of the suite's (for an approximate "
                        "implementation)")
    p.add_argument("--min-spearman", type=float, default=None, metavar="S",
                   help="also require a Spearman rank correlation >= S to pass")
    p.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="k of the reported top-k overlap (default 3)")
    add_progress_argument(p, "a line on stderr per reference case recomputed")
    p.set_defaults(func=run_check)


def run_export(args: argparse.Namespace) -> int:
    from ..kit import export_cases

    check_jobs(args)
    start = time.perf_counter()
    manifest = export_cases(args.directory, cases=args.cases, progress=progress_from_args(args),
                            force=args.force, n_jobs=args.jobs)
    n_closed = sum("closed_form" in c["outputs"] for c in manifest["cases"])
    print(f"wrote {len(manifest['cases'])} cases ({n_closed} with closed-form outputs) and manifest.json "
          f"to {args.directory} in {time.perf_counter() - start:.1f} s")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..kit import check_scores

    report = check_scores(args.directory, args.scores, target=args.target, cases=args.cases, rtol=args.rtol,
                          top_k=args.top_k, min_spearman=args.min_spearman, progress=progress_from_args(args))
    print(report.table())
    return 0 if report.passed else 1


def add_jobs_argument(p: Any) -> None:
    """--jobs N: processes for the ground truth's per-point loops (the same numbers as one)."""
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="processes for the finite-difference and leave-one-out loops (default 1; -1: every "
                        "CPU); the results are identical")


def add_progress_argument(p: Any, what: str) -> None:
    """--progress / --no-progress: ``what`` (the command's progress lines), by default where stderr is a
    terminal; `progress_from_args()` resolves it. Every command with a long loop takes it."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"{what} (default: when stderr is a terminal)")


def progress_from_args(args: argparse.Namespace) -> bool:
    """--progress True or False as given; unset (None), the library's rule: on where stderr is a terminal
    (refsam.validation.check_progress, the default of every long loop's ``progress=None``)."""
    from ..validation import check_progress

    return check_progress(args.progress)


def check_jobs(args: argparse.Namespace) -> None:
    """--jobs by the ground truth's own rule (ground_truth.parallel.check_parallel), named as the CLI's."""
    from ..ground_truth.parallel import check_parallel

    try:
        check_parallel(None, args.jobs)
    except InvalidInputError:
        raise InvalidInputError(f"--jobs must be >= 1, or -1 for every CPU, got {args.jobs}") from None
