"""Mislabeled-data detection: rank training points by self-influence −I_j(ℓ_j), score the ranking.

Three protocols side by side (`detection_protocols()`), for each influence method:

* ``self``: self-influence −I_j(ℓ_j) (below);
* ``validation``: influence on a clean validation set, I_j(f), f = the mean validation loss — a
  mislabeled point is one whose removal would lower the loss on correctly labelled data;
* ``relabel``: inspect the top fraction q of a ranking, correct the flipped labels found there, retrain
  with the same procedure (θ_0, batches, learning rates), and measure the fraction of flipped labels
  fixed, the test accuracy acc_q, and the accuracy recovered, (acc_q − acc_noisy)/(acc_clean − acc_noisy),
  with acc_clean from retraining on all labels corrected — reported only when correcting every label
  gains at least MIN_RECOVERY_GAP = 2 test points (nan otherwise: the ratio would be noise).

Self-influence ``I_j(ℓ_j)`` is ≤ 0 for a well-behaved point (up-weighting j lowers its own loss). The
detection score is ``−I_j(ℓ_j)``: how much j's own loss would rise if j were removed; points the model
can fit only by memorising them — typically mislabeled ones — score high. Two baselines that are not
influence methods: ``loss`` (rank by ℓ_j(θ_T)) and ``random``.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from ..errors import InvalidInputError
from ..influence.methods import METHOD_TABLE
from ..objective import Problem
from ..training import train
from ..validation import check_finite_array, check_progress, check_random_state
from .fitting import METHODS, Fit, check_fit, fit_self_influence, influence, progress_line, resolve_method
from .removal import accuracy

__all__ = [
    "BASELINES",
    "PROTOCOL_FRACTIONS",
    "SCORES_FILE",
    "ProtocolResult",
    "detection_protocols",
    "retrain_relabelled",
    "DETECTION_FRACTIONS",
    "DetectionResult",
    "auroc",
    "detect_mislabeled",
    "detection_curve",
    "detection_metrics",
    "detection_scores",
    "recall_at_fraction",
    "check_scores_path",
    "save_scores",
]

BASELINES = ("loss", "random")
DETECTION_FRACTIONS = (0.05, 0.10, 0.20)
PROTOCOL_FRACTIONS = (0.05, 0.10, 0.20, 0.30)  # fractions of the training set inspected by "relabel"
MIN_RECOVERY_GAP = 2  # test points acc_clean must gain over acc_noisy before "recovered" is reported
_SPELLINGS = {s for i in METHOD_TABLE if i.name in METHODS for s in (i.name, *i.aliases)}

Array = NDArray[np.float64]


def detection_scores(fit_: Fit, method: str, seed: object = 0, progress: bool | None = None) -> Array:
    """Suspicion scores, shape (n,): higher means more likely mislabeled.

    * influence methods: ``−I_j(ℓ_j)`` (self-influence, sign flipped: the rise of j's loss on removal)
    * ``loss``: ``ℓ_j(θ_T)``, the training loss at the end of the run
    * ``random``: seeded uniform noise (the chance baseline)
    """
    progress = check_progress(progress)
    check_fit(fit_)
    if method == "loss":
        return np.asarray(fit_.problem.losses(fit_.theta_final), dtype=np.float64)
    if method == "random":
        return np.asarray(check_random_state(seed).random(fit_.problem.n), dtype=np.float64)
    if not isinstance(method, str) or method not in _SPELLINGS:
        raise InvalidInputError(f"`method` must be one of {list(METHODS + BASELINES)}, got {method!r}")
    return -fit_self_influence(fit_, method, progress)


def _check_scores_mask(scores: ArrayLike, flipped: ArrayLike) -> tuple[Array, NDArray[np.bool_]]:
    scores = check_finite_array("scores", scores, ndim=1)
    flipped = np.asarray(flipped)
    if flipped.shape != scores.shape:
        raise InvalidInputError(
            f"`flipped` must have shape {scores.shape} to match `scores`, got {flipped.shape}")
    return scores, flipped.astype(bool)


def recall_at_fraction(scores: ArrayLike, flipped: ArrayLike, fraction: float) -> float:
    """Fraction of the flipped labels found among the top ``ceil(fraction·n)`` scores.

    Ties at the cut are broken by index order (stable sort), so the result is deterministic.
    """
    scores, flipped = _check_scores_mask(scores, flipped)
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"`fraction` must lie in (0, 1], got {fraction}")
    if not flipped.any():
        raise InvalidInputError("`flipped` marks no point: recall is undefined without flipped labels")
    k = int(np.ceil(fraction * scores.size - 1e-9))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(flipped[top].sum() / flipped.sum())


def auroc(scores: ArrayLike, flipped: ArrayLike) -> float:
    """Area under the ROC curve for ``scores`` separating flipped (positive) from clean points.

    Computed by hand as the Mann–Whitney statistic with average ranks for ties:
        AUROC = (Σ_{i flipped} rank_i − n₊(n₊+1)/2) / (n₊ n₋)
    = P(score of a random flipped point > score of a random clean one) + ½ P(tie).
    """
    scores, flipped = _check_scores_mask(scores, flipped)
    n_pos, n_neg = int(flipped.sum()), int((~flipped).sum())
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            f"AUROC needs flipped and clean points, got {n_pos} flipped and {n_neg} clean")
    ranks = rankdata(scores)  # average ranks, 1..n
    return float((ranks[flipped].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores: ArrayLike, flipped: ArrayLike,
                      fractions: tuple[float, ...] = DETECTION_FRACTIONS) -> dict[str, float]:
    """``{"top5%": recall, "top10%": …, "top20%": …, "auroc": …}`` for one ranking."""
    out = {f"top{round(100 * f)}%": recall_at_fraction(scores, flipped, f) for f in fractions}
    out["auroc"] = auroc(scores, flipped)
    return out


def detection_curve(scores: ArrayLike, flipped: ArrayLike) -> tuple[Array, Array]:
    """(fraction of data inspected, fraction of flipped labels found), each shape (n+1,), for plots."""
    scores, flipped = _check_scores_mask(scores, flipped)
    order = np.argsort(-scores, kind="stable")
    found = np.concatenate([[0], np.cumsum(flipped[order])]) / max(flipped.sum(), 1)
    inspected = np.arange(scores.size + 1) / scores.size
    return inspected, found


@dataclass
class DetectionResult:
    method: str
    scores: Array  # (n,), higher = more suspicious
    metrics: dict[str, float]  # against the known `flipped` mask; empty when the noise is unknown
    seconds: float

    @property
    def ranking(self) -> NDArray[np.int64]:
        """Training indices, most suspicious first (ties in index order)."""
        return np.argsort(-self.scores, kind="stable")


def detect_mislabeled(fit_: Fit, flipped: ArrayLike | None = None, methods: Any = None, seed: object = 0,
                      progress: bool | None = None) -> list[DetectionResult]:
    """Rank training points by every method (and the loss and random baselines) and, when the noise is
    known, score each ranking against the ``flipped`` mask. Returns a list of `DetectionResult`.

    ``flipped=None`` (a user's data, the noise unknown): the rankings only, each ``metrics`` empty — the
    same as calling `detection_scores()` per method.
    """
    progress = check_progress(progress)
    check_fit(fit_)
    if flipped is not None:
        flipped = np.asarray(flipped, dtype=bool)
        if flipped.shape != (fit_.problem.n,):
            raise InvalidInputError(f"`flipped` must have shape ({fit_.problem.n},), got {flipped.shape}")
    chosen = fit_.available_methods() if methods is None else [resolve_method(m).name for m in methods]
    methods = list(chosen) + list(BASELINES)
    results = []
    for i, method in enumerate(methods):
        progress_line(f"  detection [{i + 1}/{len(methods)}] {method}", progress)
        start = time.perf_counter()
        scores = detection_scores(fit_, method, seed, progress and method == "trajectory")
        seconds = time.perf_counter() - start
        metrics = {} if flipped is None else detection_metrics(scores, flipped)
        results.append(DetectionResult(method, scores, metrics, seconds))
    return results


# -- scores on file --------------------------------------------------------------------------------------

SCORES_FILE = "scores.csv"


def _is_scores_file(path: str) -> bool:
    """A file `save_scores()` wrote (its header starts ``row,label,``): one it may replace."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().startswith("row,label,")
    except (OSError, UnicodeDecodeError):
        return False


def check_scores_path(directory: str | os.PathLike[str], overwrite: bool = False) -> str:
    """The path ``directory/scores.csv``, checked before any work: refused (ValueError) when a file
    there was not written by `save_scores()`, unless ``overwrite``. The directory may not exist yet."""
    path = os.path.join(os.fspath(directory), SCORES_FILE)
    if os.path.isdir(path):
        raise InvalidInputError(f"cannot write {path!r}: it is a directory")
    if os.path.exists(path) and not overwrite and not _is_scores_file(path):
        raise InvalidInputError(f"refusing to overwrite {path!r}: refsam did not write it; choose another "
                                f"--out, or pass --force (overwrite=True)")
    return path


def save_scores(directory: str | os.PathLike[str], results: list[DetectionResult], rows: ArrayLike,
                labels: ArrayLike, flipped: ArrayLike | None = None, overwrite: bool = False) -> str:
    """Write every training point's suspicion scores to ``directory/scores.csv``; returns its path.

    One header line, then one line per training point, most suspicious first by ``results[0]``:
    ``row`` (the point's row in the source file, `refsam.data.Dataset.rows`), ``label`` (its label
    as in the file), ``flipped`` (only when the noise is known: 1 or 0), and one column per ranking in
    ``results`` except ``random`` (higher = more suspicious). Refuses to replace a file it did not write
    unless ``overwrite``.
    """
    path = check_scores_path(directory, overwrite)
    rows = np.asarray(rows)
    labels = np.asarray(labels)
    n = results[0].scores.shape[0] if results else 0
    if rows.shape != (n,) or labels.shape != (n,):
        raise InvalidInputError(f"`rows` and `labels` must have shape ({n},), got {rows.shape} and "
                                f"{labels.shape}")
    columns = [r for r in results if r.method != "random"]
    os.makedirs(os.fspath(directory), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["row", "label"] + ([] if flipped is None else ["flipped"])
                        + [r.method for r in columns])
        mask = None if flipped is None else np.asarray(flipped, dtype=bool)
        for j in results[0].ranking:
            writer.writerow([int(rows[j]), str(labels[j])] + ([] if mask is None else [int(mask[j])])
                            + [repr(float(r.scores[j])) for r in columns])
    return path




def retrain_relabelled(fit_: Fit, y: ArrayLike) -> NDArray[np.float64]:
    """θ_T of the recorded procedure (θ_0, batches, the optimizer and its rates, rule) on labels ``y``."""
    check_fit(fit_)
    p, trajectory = fit_.problem, fit_.trajectory
    relabelled = Problem(p.model, p.X, y, p.weights, l2=p.l2)
    return train(relabelled, fit_.sam, trajectory.optimizer(), theta0=trajectory.theta0,
                 batches=trajectory.batches, progress=False).theta_final


@dataclass
class ProtocolResult:
    """One ranking under the three protocols: its AUROC, and the relabel-and-retrain curve."""

    ranking: str  # "<method> (self)", "<method> (validation)", "loss", "random"
    auroc: float
    fractions: tuple[float, ...]
    fixed: Array  # fraction of the flipped labels corrected after inspecting each fraction
    test_accuracy: Array  # after retraining on the corrected labels
    recovered: Array  # (acc_q − acc_noisy) / (acc_clean − acc_noisy); nan if the gap is < 2 test points


def detection_protocols(fit_: Fit, flipped: ArrayLike, true_labels: ArrayLike, X_val: ArrayLike,
                        y_val: ArrayLike, X_test: ArrayLike, y_test: ArrayLike, methods: Any = None,
                        fractions: tuple[float, ...] = PROTOCOL_FRACTIONS, seed: object = 0,
                        progress: bool | None = None) -> tuple[list[ProtocolResult], dict[str, float]]:
    """The three protocols of the module docstring for every method, with the loss and random baselines.

    ``true_labels`` are the labels before flipping (known in a benchmark), used to correct the flipped
    points a ranking finds. Returns (results, {"noisy": acc, "clean": acc}) — the test accuracies of
    the run on the noisy labels and retrained on all labels corrected.
    """
    progress = check_progress(progress)
    check_fit(fit_)
    problem = fit_.problem
    mask = np.asarray(flipped, dtype=bool)
    true = np.asarray(true_labels)
    if mask.shape != (problem.n,) or true.shape != (problem.n,):
        raise InvalidInputError(f"`flipped` and `true_labels` must have shape ({problem.n},), got "
                                f"{mask.shape} and {true.shape}")
    if not mask.any():
        raise InvalidInputError("`flipped` marks no label: there is nothing to detect")
    if np.any(true[~mask] != problem.y[~mask]) or np.any(true[mask] == problem.y[mask]):
        raise InvalidInputError("`true_labels` must differ from the training labels exactly where `flipped`")
    for q in fractions:
        if not 0 < q <= 1:
            raise InvalidInputError(f"`fractions` must lie in (0, 1], got {q!r}")
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    chosen = fit_.available_methods() if methods is None else [resolve_method(m).name for m in methods]
    rankings: dict[str, Array] = {}
    for i, method in enumerate(chosen):
        progress_line(f"  protocols [{i + 1}/{len(chosen)}] {method}: self-influence and validation "
                      f"influence", progress)
        rankings[f"{method} (self)"] = detection_scores(fit_, method, seed, progress=False)
        rankings[f"{method} (validation)"] = influence(fit_, method, X_val, y_val,
                                                       progress=False).mean(axis=1)  # I_j(f)
    for baseline in BASELINES:
        rankings[baseline] = detection_scores(fit_, baseline, seed, progress=False)
    acc_noisy = accuracy(problem, fit_.theta_final, X_test, y_test)
    acc_clean = accuracy(problem, retrain_relabelled(fit_, true), X_test, y_test)
    results = []
    for name, scores in rankings.items():
        progress_line(f"  protocols: relabel and retrain by {name}", progress)
        order = np.argsort(-scores, kind="stable")
        fixed, accs = [], []
        for q in fractions:
            inspected = order[:max(1, int(round(q * problem.n)))]
            found = inspected[mask[inspected]]
            y_new = problem.y.copy()
            y_new[found] = true[found]
            fixed.append(found.size / mask.sum())
            accs.append(accuracy(problem, retrain_relabelled(fit_, y_new), X_test, y_test))
        gap = acc_clean - acc_noisy
        if gap * len(y_test) >= MIN_RECOVERY_GAP:
            recovered = (np.array(accs) - acc_noisy) / gap
        else:  # correcting every label gains < 2 test points: a recovered fraction would be noise
            recovered = np.full(len(accs), np.nan)
        results.append(ProtocolResult(name, auroc(scores, mask), tuple(fractions), np.array(fixed),
                                      np.array(accs), recovered))
    return results, {"noisy": acc_noisy, "clean": acc_clean}
