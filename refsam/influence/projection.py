"""TRAK-style influence from randomly projected gradients.

Conventions
-----------
* Same target, sign and scale as every method: I_j(f) ≈ ∂f/∂w_j, here in the Koh–Liang form at one
  point x (the trained weights, or ŵ to take the gradients at SAM's perturbed point):

      I_j(f) ≈ −(1/n) φ_fᵀ (Pᵀ C P + λ PᵀP)⁻¹ φ_j,    φ = Pᵀ ∇ℓ(x),  P (d, k) Gaussian, entries N(0, 1/k)

  with C the curvature at x: ``curvature="fisher"`` (TRAK's: the empirical Fisher
  (1/n) Σ_i w_i ∇ℓ_i ∇ℓ_iᵀ, so Pᵀ C P = Φᵀ diag(w/n) Φ from the projected gradients alone) or
  ``"exact"`` (Pᵀ H P, k Hessian-vector products). λ: the problem's weight decay (its mean for a
  per-coordinate λ) unless ``damping`` is given.
* For k = d the projection is invertible and the estimate equals the unprojected Koh–Liang influence
  with the same curvature, ∇fᵀ(C + λI)⁻¹∇ℓ_j: the projection error alone vanishes there (tested).
  SAM's terms are absent by construction, as in every published TRAK; what they are worth is measured
  separately (docs/approximations.md).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, check_finite_result
from ..objective import Problem, check_problem
from ..training import Optimizer
from ..validation import check_choice, check_nonnegative, check_positive_int, check_random_state
from .fixed_point import FixedPoint
from .linearisation import lam_out

__all__ = ["TRAK_CURVATURES", "trak_influence"]

TRAK_CURVATURES = ("fisher", "exact")

Array = NDArray[np.float64]


def trak_influence(problem: Problem, theta: ArrayLike | FixedPoint, X_test: ArrayLike, y_test: ArrayLike,
                   dimension: int, *, curvature: str = "fisher", damping: float | None = None,
                   seed: object = 0, optimizer: Optimizer | None = None) -> Array:
    """TRAK-style influence of every training point on every test loss, shape (n_train, n_test).

    ``theta``: the point x the gradients are taken at; ``dimension``: k, the projection's width
    (1 ≤ k ≤ d); ``curvature``: "fisher" or "exact"; ``damping``: λ (default: the mean L2 the objective
    carries, the loss's ``l2`` plus the optimizer's weight decay, from ``optimizer`` or a FixedPoint's);
    ``seed``: the projection's random state. Cost: O(n d k) for the projection, O(k³) for the solve.
    """
    problem = check_problem(problem)
    if optimizer is None and isinstance(theta, FixedPoint):
        optimizer = theta.optimizer
    x = problem.check_theta(theta.theta if isinstance(theta, FixedPoint) else theta)
    X_test, y_test = problem.check_test(X_test, y_test)
    k = check_positive_int("dimension", dimension)
    if k > problem.d:
        raise InvalidInputError(f"`dimension` must be at most d = {problem.d}, got {k}")
    curvature = check_choice("curvature", curvature, TRAK_CURVATURES)
    if damping is None:
        lam = float(np.mean(problem.l2 + lam_out(optimizer)))
    else:
        lam = check_nonnegative("damping", damping)
    P = check_random_state(seed).standard_normal((problem.d, k)) / np.sqrt(k)
    at_x = problem.at(x)
    Phi = at_x.jvp(P)  # φ_j = Pᵀ∇ℓ_j, rows (n, k)
    if curvature == "fisher":
        C = (Phi * (problem.weights / problem.n)[:, None]).T @ Phi  # Φᵀ diag(w/n) Φ
    else:
        C = P.T @ at_x.hvp(P)  # Pᵀ H P
    system = 0.5 * (C + C.T) + lam * (P.T @ P)
    phi_test = problem.model.per_sample_grads(x, X_test, y_test) @ P  # (m, k)
    try:
        solved = np.linalg.solve(system, phi_test.T)  # (k, m)
    except np.linalg.LinAlgError:
        raise InvalidInputError("the projected curvature is singular: use damping > 0") from None
    return check_finite_result("trak_influence", -(Phi @ solved) / problem.n)
