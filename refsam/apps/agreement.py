"""Every method beside its ground truth: finite differences of its own target and leave-one-out retraining."""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import pearsonr, spearmanr

from ..ground_truth import (
    finite_difference_influence,
    finite_difference_replay,
    leave_one_out,
    leave_one_out_replay,
)
from ..ground_truth.parallel import shared_executor
from ..tolerances import FD_STEP, rel_err
from ..validation import check_positive_int, check_progress, check_random_state
from .fitting import CLOSED_FORM_METHODS, Fit, check_fit, influence, progress_line, resolve_method

__all__ = ["H_RUN", "Agreement", "GroundTruth", "choose_subset", "compare_methods", "ground_truth"]

Array = NDArray[np.float64]


@dataclass
class Agreement:
    """One method's predictions beside ground truth on a subset of training points."""

    method: str
    predicted: Array  # (s,) −I_j(f): predicted change of f on removing j
    actual_loo: Array  # (s,) f(θ without j) − f(θ), by retraining
    derivative_truth: Array  # (s,) finite-difference I_j(f) of the object the method targets
    influence: Array  # (s,) I_j(f) by the method
    seconds: float

    @property
    def pearson(self) -> float:
        return _safe_corr(pearsonr, self.predicted, self.actual_loo)

    @property
    def spearman(self) -> float:
        return _safe_corr(spearmanr, self.predicted, self.actual_loo)

    @property
    def max_rel_err(self) -> float:
        """rel_err of the method's I_j(f) against the finite-difference derivative it estimates."""
        return rel_err(self.influence, self.derivative_truth)


def _safe_corr(fn: Any, a: Array, b: Array) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


@dataclass
class GroundTruth:
    """Ground truth for f = mean validation loss on a subset of training points.

    ``loo_run``: actual change of f when j is removed and the run is repeated (same init, batches,
    learning rates; w_j = 0). ``derivative_run``: central differences of f(θ_T(w)) in w_j, the exact
    target of the trajectory methods. ``derivative_root`` / ``loo_root``: the same for the re-solved
    SAM root θ̂(w), the target of the closed-form methods (nan without a root).
    """

    subset: NDArray[np.int64]  # (s,) training indices
    loo_run: Array  # (s,)
    derivative_run: Array  # (s,)
    derivative_root: Array  # (s,)
    loo_root: Array  # (s,)
    seconds: float


H_RUN = FD_STEP  # replay finite differences (refsam.tolerances)


def choose_subset(n: int, size: int, flipped: ArrayLike | None = None, seed: object = 0) -> NDArray[np.int64]:
    """A seeded subset of ``size`` training indices; with a ``flipped`` mask, up to half are flipped
    points (their removal has the largest effects, which spreads the ground truth out)."""
    size = min(check_positive_int("size", size), n)
    rng = check_random_state(seed)
    if flipped is None or not np.any(flipped):
        return np.sort(rng.choice(n, size=size, replace=False))
    flipped = np.asarray(flipped, dtype=bool)
    bad, good = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    n_bad = min(size // 2, bad.size)
    n_good = min(size - n_bad, good.size)
    return np.sort(np.concatenate([rng.choice(bad, n_bad, replace=False),
                                   rng.choice(good, n_good, replace=False)]))


def ground_truth(fit_: Fit, X_val: ArrayLike, y_val: ArrayLike, subset: ArrayLike, h: float = H_RUN,
                 progress: bool | None = None, *, executor: Executor | None = None,
                 n_jobs: int = 1) -> GroundTruth:
    """Retrain and re-solve for every j in ``subset`` (see `GroundTruth`).

    Cost: 3 replays of the run per point (`refsam.ground_truth.replay`), plus 3 root solves per
    point when there is a root (`refsam.ground_truth.resolve`); on ``executor`` or ``n_jobs``
    processes (one pool for all of them, `refsam.ground_truth.parallel`), with the serial result.
    """
    progress = check_progress(progress)
    check_fit(fit_)
    problem = fit_.problem
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    subset = np.asarray(subset, dtype=np.int64)
    start = time.perf_counter()
    progress_line(f"  ground truth: {subset.size} leave-one-out replays, {2 * subset.size} finite-difference "
              f"replays", progress)
    with shared_executor(executor, n_jobs) as pool:
        # per-sample validation losses (s, m) -> mean over the validation set: f = mean loss, linear in ℓ_k
        loo_run = leave_one_out_replay(problem, fit_.trajectory, X_val, y_val, subset, progress=progress,
                                       executor=pool).mean(axis=1)
        derivative_run = finite_difference_replay(problem, fit_.trajectory, X_val, y_val, subset, h=h,
                                                  progress=progress, executor=pool).mean(axis=1)
        derivative_root = np.full(subset.size, np.nan)
        loo_root = np.full(subset.size, np.nan)
        if fit_.has_root:
            progress_line(f"  ground truth: re-solving the SAM root for {subset.size} points (×3 solves)",
                          progress)
            root = fit_.fixed_point  # carries the run's optimizer (its weight decay is part of G)
            assert root is not None
            derivative_root = finite_difference_influence(problem, fit_.sam, root, X_val, y_val,
                                                          indices=subset, executor=pool,
                                                          progress=progress).mean(axis=1)
            loo_root = leave_one_out(problem, fit_.sam, root, X_val, y_val, indices=subset,
                                     executor=pool, progress=progress).mean(axis=1)
    return GroundTruth(subset, loo_run, derivative_run, derivative_root, loo_root,
                       time.perf_counter() - start)


def compare_methods(fit_: Fit, X_val: ArrayLike, y_val: ArrayLike, truth: GroundTruth,
                    methods: Any = None, progress: bool | None = None) -> list[Agreement]:
    """Each method's I_j(f), f = mean validation loss, beside the ground truth on ``truth.subset``.

    Closed-form methods are compared with the root's finite differences (their exact target) and
    trajectory methods with the run's; both with the actual leave-one-out retraining. Returns a list
    of `Agreement` (timing covers all n training points, not just the subset).
    """
    progress = check_progress(progress)
    check_fit(fit_)
    methods = fit_.available_methods() if methods is None else [resolve_method(m).name for m in methods]
    out = []
    for i, method in enumerate(methods):
        progress_line(f"  influence [{i + 1}/{len(methods)}] {method}", progress)
        start = time.perf_counter()
        inf_f = influence(fit_, method, X_val, y_val, progress and method == "trajectory").mean(axis=1)
        seconds = time.perf_counter() - start
        target = truth.derivative_root if method in CLOSED_FORM_METHODS else truth.derivative_run
        sub = inf_f[truth.subset]
        out.append(Agreement(method, -sub, truth.loo_run, target, sub, seconds))
    return out
