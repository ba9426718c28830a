"""Counterfactual retraining: the ground truth for trajectory influence.

Conventions
-----------
* A counterfactual run replays the recorded schedule — same θ_0, batches B_t, learning rates η_t, SAM
  rule — with changed sample weights (`refsam.training.replay()`); it is counterfactual SGD in the
  sense of Hara et al. (2019), here for SAM. w⁰ = ``trajectory.weights`` (all ones by default).
* Central finite differences, for each j in ``indices``:
      I_j(f) ≈ [ f(θ_T(w⁰ + h e_j)) − f(θ_T(w⁰ − h e_j)) ] / (2h)        error O(h²) + O(δ/h)
  (δ ≈ 1e-16 · |f|, rounding); where w⁰_j < h, the second-order one-sided stencil on w⁰_j, w⁰_j + h,
  w⁰_j + 2h (`stencil`: no negative weight). h below 1e-10 or below w⁰_j's resolution is
  refused. Uses nothing but the training step itself: an independent oracle for
  `refsam.trajectory_influence()`.
* Leave-one-out: Δf_j = f(θ_T(w⁰ with w_j = 0)) − f(θ_T(w⁰)), the actual change of f when j is
  removed; trajectory influence predicts it to first order as −I_j(f).
* Test functions f are the per-sample test losses ℓ(z_k^test, θ): results have shape (len(indices), m).
Cost: two (finite differences) or one (leave-one-out) replays of the whole run per index, advanced
in blocks of up to 64 points (`refsam.training.replay_final()`: one (d, K) block of runs); the
blocks run serially, on a caller's ``executor`` or on ``n_jobs`` processes (`parallel`).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..objective import Problem, check_problem
from ..tolerances import FD_STEP
from ..training import Trajectory, check_trajectory, replay_final
from ..validation import check_indices, check_progress
from .parallel import check_parallel, map_rows
from .stencil import check_step, weight_stencil

__all__ = ["H_DEFAULT", "finite_difference_replay", "leave_one_out_replay"]

H_DEFAULT = FD_STEP  # central differences (refsam.tolerances)

Array = NDArray[np.float64]


def finite_difference_replay(problem: Problem, trajectory: Trajectory, X_test: ArrayLike,
                             y_test: ArrayLike, indices: ArrayLike | None = None, h: float = H_DEFAULT,
                                progress: bool | None = None, *, executor: Executor | None = None,
                                n_jobs: int = 1) -> Array:
    """Central differences of replaying the run with w_j = w⁰_j ± h, ≈ I_j(test loss k).

    entry [r, k] = [ℓ_k^test(θ_T(w⁰ + h e_j)) − ℓ_k^test(θ_T(w⁰ − h e_j))] / (2h),  j = indices[r]
    (one-sided, second order, where w⁰_j < h); shape (len(indices), m). ``indices=None`` means all n
    training points. ``h`` must be ≥ 1e-10 and above the float64 resolution of every w⁰_j.
    ``executor`` / ``n_jobs``: run the per-point loop on a concurrent.futures executor or a process
    pool (`parallel`); the result is the serial one, bit for bit. ``progress``: per chunk of points, to
    stderr (None: where stderr is a terminal).
    """
    problem, X_test, y_test, idx = _check_inputs(problem, trajectory, X_test, y_test, indices)
    progress = check_progress(progress)
    h = check_step(h)
    executor, n_jobs = check_parallel(executor, n_jobs)
    return map_rows(_difference_rows, (problem, trajectory, X_test, y_test, h), idx, X_test.shape[0],
                    executor, n_jobs, "finite differences: replayed", progress)


def leave_one_out_replay(problem: Problem, trajectory: Trajectory, X_test: ArrayLike, y_test: ArrayLike,
                         indices: ArrayLike | None = None, progress: bool | None = None, *,
                         executor: Executor | None = None, n_jobs: int = 1) -> Array:
    """Actual change of each test loss when training point j is removed (w_j = 0) from the replayed run.

    entry [r, k] = ℓ_k^test(θ_T(w⁰ with w_j = 0)) − ℓ_k^test(θ_T),  j = indices[r];  shape
    (len(indices), m). Compare with the prediction −I_j(test loss k). The batches keep their size
    |B_t| (j stays in its batches with weight 0), as in Hara et al.'s counterfactual SGD.
    ``executor`` / ``n_jobs``: run the per-point loop on a concurrent.futures executor or a process
    pool (`parallel`); the result is the serial one, bit for bit. ``progress``: per chunk of points, to
    stderr (None: where stderr is a terminal).
    """
    problem, X_test, y_test, idx = _check_inputs(problem, trajectory, X_test, y_test, indices)
    progress = check_progress(progress)
    executor, n_jobs = check_parallel(executor, n_jobs)
    return map_rows(_removal_rows, (problem, trajectory, X_test, y_test), idx, X_test.shape[0],
                    executor, n_jobs, "leave-one-out: replayed", progress)


def _difference_rows(problem: Problem, trajectory: Trajectory, X_test: Array, y_test: Any, h: float,
                     chunk: NDArray[np.int64]) -> Array:
    """The finite-difference rows of the training points in ``chunk`` (one task of `map_rows()`):
    every stencil weight vector of the chunk replayed together as one block."""
    stencils = [weight_stencil(trajectory.weights, int(j), h) for j in chunk]
    vectors = np.array([w for ws, _ in stencils for w in ws])  # (Σ stencil sizes, n)
    losses = _final_losses(problem, trajectory, vectors, X_test, y_test)
    out = np.empty((len(chunk), X_test.shape[0]))
    start = 0
    for row, (ws, coefficients) in enumerate(stencils):
        out[row] = coefficients @ losses[start:start + len(ws)]
        start += len(ws)
    return out


def _removal_rows(problem: Problem, trajectory: Trajectory, X_test: Array, y_test: Any,
                  chunk: NDArray[np.int64]) -> Array:
    """The leave-one-out rows of the training points in ``chunk`` (one task of `map_rows()`): their
    runs with w_j = 0 replayed together as one block. A point whose weight is already 0 leaves the run
    unchanged: its row is exactly 0 (not the rounding of a block replay against the recorded run)."""
    out = np.zeros((len(chunk), X_test.shape[0]))
    moved = np.flatnonzero(trajectory.weights[chunk] != 0.0)  # rows whose removal changes w
    if moved.size:
        weights = np.repeat(trajectory.weights[None, :], moved.size, axis=0)
        weights[np.arange(moved.size), chunk[moved]] = 0.0
        base = problem.model.losses(trajectory.theta_final, X_test, y_test)  # (m,)
        out[moved] = _final_losses(problem, trajectory, weights, X_test, y_test) - base
    return out


def _final_losses(problem: Problem, trajectory: Trajectory, weights: Array, X_test: Array,
                  y_test: Any) -> Array:
    """Test losses at θ_T of the run replayed with each row of ``weights``, (K, m)."""
    finals = replay_final(problem, trajectory, weights)  # (K, d)
    return np.array([problem.model.losses(theta, X_test, y_test) for theta in finals])


def _check_inputs(problem: object, trajectory: object, X_test: ArrayLike, y_test: ArrayLike,
                  indices: ArrayLike | None) -> tuple[Problem, Array, Any, NDArray[np.int64]]:
    checked = check_problem(problem)
    check_trajectory(trajectory).check_problem(checked)
    X_arr, y_arr = checked.check_test(X_test, y_test)
    return checked, X_arr, y_arr, check_indices("indices", indices, checked.n)


