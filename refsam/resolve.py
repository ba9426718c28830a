"""Ground truth for the closed form by re-solving the root with changed sample weights (SPEC §5).

Conventions
-----------
* θ̂(w) is the root of G(θ; w) (:mod:`refsam.fixed_point`) that Newton reaches from a warm start at
  the reference root θ̂ = θ̂(w⁰), w⁰ = ``problem.weights`` (all ones by default).
* Central finite differences, for each j in ``indices``:
      I_j(f) ≈ [ f(θ̂(w⁰ + h e_j)) − f(θ̂(w⁰ − h e_j)) ] / (2h)          error O(h²) + O(δ/h)
  (δ = the re-solved roots' residual error, ~1e-16). This is an independent oracle for the closed form:
  it uses only G, never ∂G/∂θ's formula except inside Newton, whose answer does not depend on it.
* Leave-one-out: Δf_j = f(θ̂(w⁰ − w⁰_j e_j)) − f(θ̂), the actual change of f when j is removed; the
  closed form predicts it to first order as −I_j(f).
* Test functions f are the per-sample test losses ℓ(z_k^test, θ): results have shape (len(indices), m).
Cost: two (finite differences) or one (leave-one-out) root solves per index, each a few Newton steps.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_positive
from .fixed_point import FixedPoint, _check_inputs, solve_fixed_point
from .objective import Problem
from .sam import SAM

H_DEFAULT = 1e-4  # central differences: truncation ~h² ≈ 1e-8 relative, rounding ~1e-16/h ≈ 1e-12
RESOLVE_TOL = 1e-12  # residual every re-solved root must reach (Newton then polishes to ~1e-16)


def _check_indices(problem: Problem, indices) -> np.ndarray:
    if indices is None:
        return np.arange(problem.n)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"`indices` must be a non-empty 1-d array of ints, got {idx!r}")
    if idx.min() < 0 or idx.max() >= problem.n:
        raise ValueError(f"`indices` must lie in 0..{problem.n - 1}, got values in {idx.min()}..{idx.max()}")
    return idx.astype(np.int64)


def _reference(problem, sam, theta_hat, X_test, y_test):
    """Validate once and polish θ̂ to a root at the problem's weights (warm start, tight tolerance)."""
    if isinstance(theta_hat, FixedPoint):
        theta_hat = theta_hat.theta
    theta_hat, _ = _check_inputs(problem, sam, theta_hat, "theta_hat")
    if X_test is not None:
        X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    root = solve_fixed_point(problem, sam, theta_hat, tol=RESOLVE_TOL).theta
    return root, X_test, y_test


def _resolve(problem, sam, weights, theta_start, j) -> np.ndarray:
    """θ̂(weights), warm-started at θ̂; the error names the training point whose re-solve failed."""
    try:
        return solve_fixed_point(problem, sam, theta_start, tol=RESOLVE_TOL, weights=weights).theta
    except Exception as exc:
        exc.args = (f"re-solving the root with w_{j} = {weights[j]:g} failed: {exc}",) + exc.args[1:]
        raise


def finite_difference_parameters(problem: Problem, sam: SAM, theta_hat, indices=None,
                                 h: float = H_DEFAULT) -> np.ndarray:
    """[θ̂(w⁰ + h e_j) − θ̂(w⁰ − h e_j)] / (2h) ≈ dθ̂/dw_j, shape (len(indices), d)."""
    root, _, _ = _reference(problem, sam, theta_hat, None, None)
    idx = _check_indices(problem, indices)
    h = check_positive("h", h)
    out = np.empty((len(idx), problem.d))
    for row, j in enumerate(idx):
        plus, minus = problem.weights.copy(), problem.weights.copy()
        plus[j] += h
        minus[j] -= h
        out[row] = (_resolve(problem, sam, plus, root, j) - _resolve(problem, sam, minus, root, j)) / (2 * h)
    return out


def finite_difference_influence(problem: Problem, sam: SAM, theta_hat, X_test, y_test, indices=None,
                                h: float = H_DEFAULT) -> np.ndarray:
    """Central differences of the re-solved root's test losses, ≈ I_j(test loss k), shape (len(indices), m).

    entry [r, k] = [ℓ_k^test(θ̂(w⁰ + h e_j)) − ℓ_k^test(θ̂(w⁰ − h e_j))] / (2h),  j = indices[r].
    ``theta_hat`` (array (d,) or FixedPoint) is first polished to a root; ``indices=None`` means all n.
    """
    root, X_test, y_test = _reference(problem, sam, theta_hat, X_test, y_test)
    idx = _check_indices(problem, indices)
    h = check_positive("h", h)
    out = np.empty((len(idx), X_test.shape[0]))
    for row, j in enumerate(idx):
        plus, minus = problem.weights.copy(), problem.weights.copy()
        plus[j] += h
        minus[j] -= h
        loss_plus = problem.model.losses(_resolve(problem, sam, plus, root, j), X_test, y_test)
        loss_minus = problem.model.losses(_resolve(problem, sam, minus, root, j), X_test, y_test)
        out[row] = (loss_plus - loss_minus) / (2 * h)
    return out


def leave_one_out(problem: Problem, sam: SAM, theta_hat, X_test, y_test, indices=None) -> np.ndarray:
    """Actual change of each test loss when training point j is removed (w_j = 0), re-solving the root.

    entry [r, k] = ℓ_k^test(θ̂(w⁰ with w_j = 0)) − ℓ_k^test(θ̂),  j = indices[r];  shape (len(indices), m).
    Compare with the closed-form prediction −I_j(test loss k). ``theta_hat`` (array (d,) or
    FixedPoint) is first polished to a root; every re-solve is warm-started there.
    """
    root, X_test, y_test = _reference(problem, sam, theta_hat, X_test, y_test)
    idx = _check_indices(problem, indices)
    base = problem.model.losses(root, X_test, y_test)  # (m,)
    out = np.empty((len(idx), X_test.shape[0]))
    for row, j in enumerate(idx):
        weights = problem.weights.copy()
        weights[j] = 0.0
        out[row] = problem.model.losses(_resolve(problem, sam, weights, root, j), X_test, y_test) - base
    return out
