"""Checking an implementation's influence scores against the reference suite (``refsam check``).

Comparison of scores S with a reference R: ``max_abs_err = ‖S − R‖_∞``,
``rel_err = max_abs_err / max(‖R‖_∞, 1e-300)``; a case passes iff
``max_abs_err <= atol + rtol · ‖R‖_∞`` with that output's (rtol, atol) from the manifest. The Spearman
rank correlation of the flattened arrays is reported beside it (informative, not part of the verdict).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.archive import SingleArrayError, read_npz
from ..errors import InvalidInputError
from .files import CaseFileError, load_entry, preview, read_manifest
from .suite import TARGETS

__all__ = ["CaseCheck", "CheckReport", "check_scores", "compare", "read_scores"]


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


@dataclass(frozen=True)
class CheckReport:
    """Per-case results of :func:`check_scores`; ``passed`` iff every compared case passed."""

    target: str
    results: tuple
    skipped: tuple = ()  # cases selected but without the target output (e.g. no closed form)
    ignored_keys: tuple = ()  # score keys that name no selected case

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def table(self) -> str:
        """The per-case table printed by ``refsam check``."""
        width = max([len("case")] + [len(r.case_id) for r in self.results])
        lines = [f"{'case':<{width}}  result  max abs err  rel err    spearman  rtol"]
        for r in self.results:
            lines.append(f"{r.case_id:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.max_abs_err:<11.3e}"
                         f"  {r.rel_err:<9.3e}  {r.spearman:<8.4f}  {r.rtol:.0e}"
                         + (f"  {r.note}" if r.note else ""))
        n = len(self.results)
        lines.append(f"{n - self.n_failed}/{n} cases passed (target: {self.target})"
                     + ("" if self.passed else f"; {self.n_failed} FAILED"))
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
    path = os.fspath(scores)
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


def compare(scores: NDArray[np.float64], reference: NDArray[np.float64], rtol: float, atol: float = 0.0,
            case_id: str = "") -> CaseCheck:
    """Compare one score array with a reference of the same shape (criterion in the module docstring)."""
    if not np.all(np.isfinite(scores)):
        bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
        return CaseCheck(case_id, False, float("inf"), float("inf"), float("nan"), rtol, atol,
                         f"{bad} non-finite scores")
    max_abs = float(np.max(np.abs(scores - reference)))
    scale = float(np.max(np.abs(reference)))
    passed = max_abs <= atol + rtol * scale
    note = ""
    if not passed and np.max(np.abs(scores + reference)) <= atol + rtol * scale:
        note = "scores = -reference: sign convention flipped? (I_j = +d f / d w_j)"
    return CaseCheck(case_id, bool(passed), max_abs, max_abs / max(scale, 1e-300),
                     _spearman(scores, reference), rtol, atol, note)


def check_scores(directory: str | os.PathLike[str], scores: str | os.PathLike[str] | Mapping[str, Any],
                 target: str = "trajectory", cases: str | None = None) -> CheckReport:
    """Compare external influence scores with the reference cases in ``directory``.

    Parameters
    ----------
    directory : path
        A directory written by :func:`export_cases`; its manifest and every file's sha256 are verified.
    scores : path or mapping
        An ``.npz`` (loaded with ``allow_pickle=False``) or a dict holding one array per case id, shape
        (n_train, n_test), entry [j, k] = I_j(loss of test point k) — or (n_train, n_params) for the
        target "trajectory_parameters", row j = dθ_T/dw_j. Keys naming no case are ignored.
    target : str
        Which stored output to compare with: "trajectory" (default), "trajectory_fd",
        "trajectory_parameters", "closed_form", "closed_form_frozen", "closed_form_erm" or
        "closed_form_fd". Cases without it are skipped.
    cases : str, optional
        Shell-style pattern restricting the cases compared (``"logistic-*"``).

    Returns
    -------
    CheckReport
        ``.passed``, ``.results`` (one :class:`CaseCheck` per case) and ``.table()``.

    Raises
    ------
    CaseFileError (a ValueError)
        For a corrupt, tampered or missing case file or manifest, an unreadable scores file, a selected
        case missing from the scores, or scores of the wrong shape or dtype.
    """
    if target not in TARGETS:
        raise InvalidInputError(f"`target` must be one of {list(TARGETS)}, got {target!r}")
    manifest = read_manifest(directory, verify=True)
    entries = [c for c in manifest["cases"] if cases is None or fnmatch.fnmatchcase(c["id"], cases)]
    if not entries:
        raise InvalidInputError(
            f"`cases` pattern {cases!r} matches none of the {len(manifest['cases'])} cases in "
            f"{os.fspath(directory)!r}")
    compared = [c for c in entries if target in c["outputs"]]
    skipped = tuple(c["id"] for c in entries if target not in c["outputs"])
    if not compared:
        raise InvalidInputError(f"none of the selected cases has a {target!r} output (see each case's "
                         f"closed_form_status in the manifest)")
    score_arrays = read_scores(scores)
    where = "scores" if isinstance(scores, Mapping) else f"scores file {os.fspath(scores)!r}"
    missing = [c["id"] for c in compared if c["id"] not in score_arrays]
    if missing:
        raise CaseFileError(f"{where} lacks {len(missing)} case ids: {preview(missing)}; it has "
                            f"{preview(sorted(score_arrays)) or 'no arrays'} (select cases with --cases)")
    results = []
    for entry in compared:
        case = load_entry(os.fspath(directory), entry, verify=False)
        output = entry["outputs"][target]
        raw = np.asarray(score_arrays[entry["id"]])
        if raw.dtype.kind not in "fiu":
            raise CaseFileError(f"{where}: scores for {entry['id']!r} have dtype {raw.dtype}, expected "
                                f"float64")
        expected = tuple(output["shape"])
        if raw.shape != expected:
            names = {(entry["n_train"], entry["n_test"]): "(n_train, n_test) = ",
                     (entry["n_train"], entry["n_params"]): "(n_train, n_params) = "}.get(expected, "")
            hint = "; transpose it" if raw.shape == expected[::-1] else ""
            raise CaseFileError(f"{where}: scores for {entry['id']!r} have shape {raw.shape}, expected "
                                f"{names}{expected}{hint}")
        results.append(compare(raw.astype(np.float64), case.arrays[output["array"]], output["rtol"],
                               output["atol"], entry["id"]))
    selected = {c["id"] for c in entries}
    ignored = tuple(sorted(k for k in score_arrays if k not in selected))
    return CheckReport(target, tuple(results), skipped, ignored)
