"""Checking an implementation's influence scores against the reference suite (``refsam check``).

Trust: the verdict derives from refsam, not from the files. The suite's case ids, their count and which
outputs each case has come from refsam's code (`refsam.kit.suite.CASE_SPECS`); every graded
reference is recomputed from the case's recipe (`refsam.kit.suite.recompute_case()`), and a case
whose stored files disagree with the recomputation is refused
(`refsam.kit.files.verify_against_recipe()`).
A suite case absent from the directory is a failure, unless ``cases`` selects a subset by name (the
summary then says "k of N cases").

Comparison of scores S with a reference R: ``max_abs_err = ‖S − R‖_∞``,
``rel_err = max_abs_err / max(‖R‖_∞, 1e-300)``; a case passes iff
``max_abs_err <= atol + rtol · ‖R‖_∞`` with that output's (rtol, atol) from the manifest.

Grading an approximate implementation: ``rtol`` given by the user replaces the manifest's (atol = 0) —
the report says so —, and ``min_spearman`` adds a rank criterion. Reported beside the verdict either
way: the Spearman rank correlation of the flattened arrays, and the top-k overlap, the fraction of the
k largest |R| entries of each column (each test function; the whole array for a 1-column or
parameter output) that are also among the k largest |S| entries, averaged over the columns.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.archive import SingleArrayError, read_npz
from ..errors import InvalidInputError
from ..validation import check_nonnegative, check_positive_int, check_progress, describe
from .files import CaseFileError, load_entry, preview, read_manifest, verify_against_recipe
from .suite import CASE_SPECS, TARGETS

__all__ = ["CaseCheck", "CheckReport", "check_scores", "compare", "read_scores", "top_k_overlap"]


# -- checking external scores ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseCheck:
    """The comparison of one case's scores with its reference output."""

    case_id: str
    passed: bool
    max_abs_err: float  # ‖S − R‖_∞
    rel_err: float  # ‖S − R‖_∞ / ‖R‖_∞
    spearman: float  # rank correlation of the flattened arrays (nan if either is constant)
    rtol: float
    atol: float
    note: str = ""
    top_k_overlap: float = float("nan")  # mean over columns of |top-k(S) ∩ top-k(R)| / k


@dataclass(frozen=True)
class CheckReport:
    """Per-case results of `check_scores()`; ``passed`` iff every compared case passed."""

    target: str
    results: tuple[Any, ...]
    skipped: tuple[str, ...] = ()  # cases selected but without the target output (e.g. no closed form)
    ignored_keys: tuple[str, ...] = ()  # score keys that name no selected case
    top_k: int = 3
    user_rtol: float | None = None  # the grading tolerance the user chose (None: the manifest's)
    min_spearman: float | None = None
    missing: tuple[str, ...] = ()  # selected suite cases absent from the case directory: each a failure
    n_suite: int = 0  # cases in the suite (refsam's code), of which the selection is a part
    pattern: str | None = None  # the user's selection, if any

    @property
    def passed(self) -> bool:
        return not self.missing and all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        """Compared cases that failed (missing cases are counted by ``missing``)."""
        return sum(not r.passed for r in self.results)

    def table(self) -> str:
        """The per-case table printed by ``refsam check``."""
        width = max([len("case")] + [len(r.case_id) for r in self.results])
        top = f"top-{self.top_k}"
        lines = [f"{'case':<{width}}  result  max abs err  rel err    spearman  {top:<6}  rtol"]
        for r in self.results:
            lines.append(f"{r.case_id:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.max_abs_err:<11.3e}"
                         f"  {r.rel_err:<9.3e}  {r.spearman:<8.4f}  {r.top_k_overlap:<6.2f}  {r.rtol:.0e}"
                         + (f"  {r.note}" if r.note else ""))
        for case_id in self.missing:
            lines.append(f"{case_id:<{width}}  FAIL    missing from the case directory")
        n = len(self.results) + len(self.missing)
        criteria = ([] if self.user_rtol is None else [f"the user's rtol={self.user_rtol:g}"]) + (
            [] if self.min_spearman is None else [f"Spearman >= {self.min_spearman:g}"])
        graded = f", graded at {' and '.join(criteria)}" if criteria else ""
        selected = n + len(self.skipped)
        scope = (f"; {selected} of {self.n_suite} cases selected by {self.pattern!r}"
                 if self.pattern is not None else "")
        failed = self.n_failed + len(self.missing)
        lines.append(f"{n - failed}/{n} cases passed (target: {self.target}{graded}{scope})"
                     + ("" if self.passed else f"; {failed} FAILED")
                     + (f" ({len(self.missing)} missing from the case directory)" if self.missing else ""))
        rho = np.array([r.spearman for r in self.results] or [np.nan], dtype=float)
        overlap = np.array([r.top_k_overlap for r in self.results] or [np.nan], dtype=float)
        if np.any(np.isfinite(rho)):
            lines.append(f"Spearman: median {np.nanmedian(rho):.4f}, min {np.nanmin(rho):.4f}; "
                         f"{top} overlap: mean {np.nanmean(overlap):.2f}, min {np.nanmin(overlap):.2f}; "
                         f"rel err: median {np.median([r.rel_err for r in self.results]):.2e}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} selected cases have no {self.target!r} output and were "
                         f"skipped: {preview(self.skipped)}")
        if self.ignored_keys:
            lines.append(f"ignored {len(self.ignored_keys)} score keys that name no selected case: "
                         f"{preview(self.ignored_keys)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def read_scores(scores: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Scores as a dict case id -> array: from an ``.npz`` path (no pickle) or a mapping."""
    if isinstance(scores, Mapping):
        return dict(scores)
    if not isinstance(scores, (str, os.PathLike)) or not os.fspath(scores):
        raise CaseFileError(f"`scores` must be an .npz path or a dict of arrays, got {describe(scores)}")
    path = os.fspath(scores)
    if os.path.isdir(path):
        raise CaseFileError(f"scores file {path!r} is a directory, not an .npz file")
    if not os.path.isfile(path):
        raise CaseFileError(f"scores file {path!r} does not exist")
    try:
        return read_npz(path)
    except SingleArrayError as exc:
        raise CaseFileError(f"scores file {path!r} holds a single array, expected an .npz with one "
                            f"array per case id (np.savez(path, **{{case_id: scores}}))") from exc
    except InvalidInputError as exc:
        raise CaseFileError(f"scores file {path!r} is not a readable .npz without pickle ({exc}); write "
                            f"it with np.savez(path, **{{case_id: array}})") from exc


def _spearman(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def top_k_overlap(scores: NDArray[np.float64], reference: NDArray[np.float64], k: int) -> float:
    """Mean over columns of |top-k(|S|) ∩ top-k(|R|)| / k (a 1-d array is one column; k ≤ rows)."""
    S = scores.reshape(scores.shape[0], -1)
    R = reference.reshape(reference.shape[0], -1)
    k = min(k, S.shape[0])
    overlaps = [len(set(np.argsort(-np.abs(S[:, c]), kind="stable")[:k])
                    & set(np.argsort(-np.abs(R[:, c]), kind="stable")[:k])) / k for c in range(S.shape[1])]
    return float(np.mean(overlaps))


def compare(scores: NDArray[np.float64], reference: NDArray[np.float64], rtol: float, atol: float = 0.0,
            case_id: str = "", top_k: int = 3, min_spearman: float | None = None) -> CaseCheck:
    """Compare one score array with a reference of the same shape (criterion in the module docstring)."""
    if not np.all(np.isfinite(scores)):
        bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
        return CaseCheck(case_id, False, float("inf"), float("inf"), float("nan"), rtol, atol,
                         f"{bad} non-finite scores")
    max_abs = float(np.max(np.abs(scores - reference)))
    scale = float(np.max(np.abs(reference)))
    spearman = _spearman(scores, reference)
    passed = max_abs <= atol + rtol * scale
    note = ""
    if min_spearman is not None and not spearman >= min_spearman:
        passed, note = False, f"Spearman {spearman:.4f} < {min_spearman:g}"
    if not passed and np.max(np.abs(scores + reference)) <= atol + rtol * scale:
        note = "scores = -reference: sign convention flipped? (I_j = +d f / d w_j)"
    return CaseCheck(case_id, bool(passed), max_abs, max_abs / max(scale, 1e-300), spearman, rtol, atol,
                     note, top_k_overlap(scores, reference, top_k))


def check_scores(directory: str | os.PathLike[str], scores: str | os.PathLike[str] | Mapping[str, Any],
                 target: str = "trajectory", cases: str | None = None, *, rtol: float | None = None,
                 top_k: int = 3, min_spearman: float | None = None,
                 progress: bool | None = None) -> CheckReport:
    """Compare external influence scores with the reference cases in ``directory``.

    Parameters
    ----------
    directory : path
        A directory written by `export_cases()`; its manifest and every file's sha256 are verified.
    scores : path or mapping
        An ``.npz`` (loaded with ``allow_pickle=False``) or a dict holding one array per case id, shape
        (n_train, n_test), entry [j, k] = I_j(loss of test point k) — or (n_train, n_params) for the
        target "trajectory_parameters", row j = dθ_T/dw_j. Keys naming no case are ignored.
    target : str
        Which stored output to compare with: "trajectory" (default), "trajectory_fd",
        "trajectory_parameters", "closed_form", "closed_form_frozen", "closed_form_erm",
        "closed_form_fd", or the matrix-free products "jacobian_products" (J v) and
        "jacobian_T_products" (Jᵀ v), shape (n_params, 2), for the case's ``probe_vectors`` v.
        Cases without it are skipped.
    cases : str, optional
        Shell-style pattern restricting the cases compared (``"logistic-*"``).
    rtol : float, optional
        Grade at this relative tolerance instead of the manifest's (for an approximate implementation;
        atol = 0). Must be finite and >= 0.
    top_k : int
        k of the reported top-k overlap (default 3).
    min_spearman : float, optional
        Also require Spearman >= this to pass (a rank criterion for approximations).
    progress : bool or None
        Print a line to stderr per reference case recomputed (about 4 s for all 84); None (the default)
        means on where stderr is a terminal.

    Returns
    -------
    CheckReport
        ``.passed``, ``.results`` (one `CaseCheck` per case) and ``.table()``.

    Raises
    ------
    CaseFileError (a ValueError)
        For a corrupt, tampered or missing case file or manifest, an unreadable scores file, a selected
        case missing from the scores, or scores of the wrong shape or dtype.
    """
    progress = check_progress(progress)
    if target not in TARGETS:
        raise InvalidInputError(f"`target` must be one of {list(TARGETS)}, got {target!r}")
    if rtol is not None:
        rtol = check_nonnegative("rtol", rtol)
    top_k = check_positive_int("top_k", top_k)
    if min_spearman is not None:
        if isinstance(min_spearman, bool) or not isinstance(min_spearman, (int, float, np.floating)) \
                or not -1.0 <= float(min_spearman) <= 1.0:
            raise InvalidInputError(f"`min_spearman` must be a number in [-1, 1], got {min_spearman!r}")
        min_spearman = float(min_spearman)
    manifest = read_manifest(directory, verify=True)
    suite_ids = [spec.case_id for spec in CASE_SPECS]  # the suite is refsam's code, not the directory's
    selected_ids = [i for i in suite_ids if cases is None or fnmatch.fnmatchcase(i, cases)]
    if not selected_ids:
        raise InvalidInputError(
            f"`cases` pattern {cases!r} matches none of the {len(suite_ids)} cases of the suite; ids look "
            f"like "
            f"'logistic-sam-weight_decay-full' (model-rule-penalty-batching)")
    stored = {c["id"]: c for c in manifest["cases"]}
    missing = tuple(i for i in selected_ids if i not in stored)
    recomputed = {}  # the references graded against: refsam computing each case from its recipe
    for number, case_id in enumerate(selected_ids, 1):
        if progress:
            print(f"  recomputing the reference cases: {number}/{len(selected_ids)} {case_id}",
                  file=sys.stderr, flush=True)
        if case_id in stored:
            case = load_entry(os.fspath(directory), stored[case_id], verify=False)
            recomputed[case_id] = verify_against_recipe(case)
    compared = [i for i in recomputed if target in recomputed[i][1]["outputs"]]
    skipped = tuple(i for i in recomputed if target not in recomputed[i][1]["outputs"])
    if not compared and not missing:
        raise InvalidInputError(f"none of the selected cases has a {target!r} output (see each case's "
                         f"closed_form_status in the manifest)")
    rows = min((recomputed[i][1]["outputs"][target]["shape"][0] for i in compared), default=top_k)
    if top_k > rows:
        raise InvalidInputError(f"`top_k` must be at most {rows} (the rows of the compared outputs), got "
                                f"{top_k}")
    score_arrays = read_scores(scores)
    where = "scores" if isinstance(scores, Mapping) else f"scores file {os.fspath(scores)!r}"
    lacking = [i for i in compared if i not in score_arrays]
    if lacking:
        raise CaseFileError(f"{where} lacks {len(lacking)} case ids: {preview(lacking)}; it has "
                            f"{preview(sorted(score_arrays)) or 'no arrays'} (select cases with --cases)")
    results = []
    for case_id in compared:
        arrays, entry = recomputed[case_id]
        output = entry["outputs"][target]
        raw = np.asarray(score_arrays[case_id])
        if raw.dtype.kind not in "fiu":
            raise CaseFileError(f"{where}: scores for {case_id!r} have dtype {raw.dtype}, expected "
                                f"float64")
        expected = tuple(output["shape"])
        if raw.shape != expected:
            names = {(entry["n_train"], entry["n_test"]): "(n_train, n_test) = ",
                     (entry["n_train"], entry["n_params"]): "(n_train, n_params) = "}.get(expected, "")
            hint = "; transpose it" if raw.shape == expected[::-1] else ""
            raise CaseFileError(f"{where}: scores for {case_id!r} have shape {raw.shape}, expected "
                                f"{names}{expected}{hint}")
        case_rtol, case_atol = (output["rtol"], output["atol"]) if rtol is None else (rtol, 0.0)
        results.append(compare(raw.astype(np.float64), arrays[output["array"]], case_rtol, case_atol,
                               case_id, top_k, min_spearman))
    ignored = tuple(sorted(k for k in score_arrays if k not in set(selected_ids)))
    return CheckReport(target, tuple(results), skipped, ignored, top_k, rtol, min_spearman, missing,
                       len(suite_ids), cases)
