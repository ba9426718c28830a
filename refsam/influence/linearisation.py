"""The full-batch SAM residual G(θ; w) and its derivatives: the linear algebra of every fixed-point method.

Conventions
-----------
* Full batch, sample weights w (the problem's, unless ``weights`` is given), F_w = (1/n) Σ_i w_i ℓ_i.
* G is the descent direction of one SAM step (`refsam.training.descent_direction()`, the one home
  of that equation), with λ_in and λ_out from `weight_decay_split()`:

      g = ∇F_w(θ) + λ_in θ,   ŵ = θ + ε(θ; g),   G(θ; w) = ∇F_w(ŵ) + λ_in ŵ + λ_out θ

  A SAM solution θ̂ is a root, G(θ̂; w) = 0; one SAM step is θ − η G.
* Names, with H(·) = ∇²F_w(·) and K(·) = H(·) + λ_in I:

      P  = ∂ε/∂g                          (d, d), symmetric
      S  = ∂ε/∂θ|_g                        (d, d), ASAM's T = diag(|θ| + κ) term; 0 for SAM and USAM
      E  = P K(θ) + S                      (d, d), the total dε/dθ
      J  = ∂G/∂θ = K(ŵ)(I + E) + λ_out I   (d, d), NOT symmetric in general
      ∂G/∂w_j = (1/n) [∇ℓ_j(ŵ) + K(ŵ) P ∇ℓ_j(θ)]      (row j of an (n, d) matrix)

  Decoupled mode (λ_in = 0, λ_out = λ): J = H(ŵ)(I + P H(θ) + S) + λI.
See docs/closed_form.md for the derivation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import lapack

from ..errors import InvalidInputError
from ..objective import Problem, decay_matrix
from ..sam import SAM
from ..tolerances import COND_WARN
from ..training import StepTerms, descent_direction

__all__ = [
    "Factorised",
    "factorise",
    "Linearisation",
    "check_root_inputs",
    "linearise",
    "residual_jacobian",
    "residual_map",
    "residual_weight_jacobian",
    "weight_jacobian",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Linearisation:
    """Every term of G and of its derivatives at one θ (names in the module docstring).

    g, eps, w_hat = θ + ε, residual = G: (d,); H_theta = H(θ), H_hat = H(ŵ), P = ∂ε/∂g, S = ∂ε/∂θ|_g,
    E = P K(θ) + S, jacobian = J: (d, d); lam_in, lam_out: floats. ``D`` and ``D_theta`` are 0.1's names
    for ``P`` and ``S``.
    """

    theta: Array
    g: Array
    eps: Array
    w_hat: Array
    residual: Array
    H_theta: Array
    H_hat: Array
    P: Array
    S: Array
    E: Array
    jacobian: Array
    lam_in: float | Array
    lam_out: float | Array
    sam: SAM | None = None  # the rule, for O(d²) products with P (None: the dense P)

    def P_times(self, A: Array) -> Array:
        """P A = (∂ε/∂g) A for a block A (d, k): O(dk) from P's structure when the rule is known."""
        if self.sam is None:
            return self.P @ A
        return self.sam.jvp_g(self.theta, self.g, A)

    @property
    def D(self) -> Array:
        """∂ε/∂g (0.1's name; the same matrix as ``P``)."""
        return self.P

    @property
    def D_theta(self) -> Array:
        """∂ε/∂θ|_g (0.1's name; the same matrix as ``S``)."""
        return self.S

    def K_hat(self) -> Array:
        """K(ŵ) = H(ŵ) + λ_in I (diag(λ_in) for a per-coordinate λ), (d, d)."""
        return self.H_hat + decay_matrix(self.lam_in, self.H_hat.shape[0])


def linearise(problem: Problem, sam: SAM, theta: Array, weights: ArrayLike | None = None,
              terms: StepTerms | None = None,
              hessian: Callable[[Array], Array] | None = None) -> Linearisation:
    """All terms of G and J at θ (module docstring); trusts its inputs.

    Cost: two Hessians and one d × d matrix product: E = P K(θ) + S in O(d²) from the structure
    P = s T (I − c u uᵀ) T (``SAM.jvp_g`` on the columns of K(θ)) and S = diag(a) − b cᵀ, then
    J = K(ŵ) + K(ŵ) E + λ_out I, the one O(d³) product. ``terms``: the full-batch step at θ if the
    caller has it already (``descent_direction(problem, sam, theta, None, weights)``). ``hessian``: the
    curvature x ↦ C(x) (d, d) to use in place of H(x) (`refsam.influence.operators`); None: H.
    """
    lam_in, lam_out = problem.weight_decay_split()
    if terms is None:
        terms = descent_direction(problem, sam, theta, None, weights)
    if hessian is None:
        def hessian(x: Array) -> Array:
            return problem.hessian(x, None, weights)
    H_theta = hessian(theta)  # (d, d)
    H_hat = hessian(terms.w_hat)  # (d, d)
    P = sam.jacobian_g(theta, terms.g)  # ∂ε/∂g (O(d²) to form)
    S = sam.jacobian_theta(theta, terms.g)  # ∂ε/∂θ|_g (O(d²) to form)
    Lam_in, Lam_out = decay_matrix(lam_in, problem.d), decay_matrix(lam_out, problem.d)  # λ I or diag(λ_i)
    E = sam.jvp_g(theta, terms.g, H_theta + Lam_in) + S  # dε/dθ = P K(θ) + S, O(d²)
    K_hat = H_hat + Lam_in
    jacobian = K_hat + K_hat @ E + Lam_out  # J = ∂G/∂θ = K(ŵ)(I + E) + λ_out
    return Linearisation(theta, terms.g, terms.eps, terms.w_hat, terms.direction, H_theta, H_hat, P, S, E,
                         jacobian, lam_in, lam_out, sam)


def check_root_inputs(problem: object, sam: object, theta: ArrayLike, name: str = "theta",
                      weights: ArrayLike | None = None) -> tuple[Array, Array | None]:
    """Validate (problem, sam, θ, weights) at the public boundary of the fixed-point methods."""
    if not isinstance(problem, Problem):
        raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if not isinstance(sam, SAM):
        raise InvalidInputError(f"`sam` must be a refsam.SAM, got {type(sam).__name__}")
    if sam.m_sharpness is not None and sam.m_sharpness < problem.n:
        raise InvalidInputError(
            f"`sam` uses m-sharpness (m_sharpness={sam.m_sharpness} < n={problem.n}): the "
            f"fixed-point methods and the closed form do not support it; "
            f"refsam.trajectory_influence is exact for m-sharpness runs")
    theta = problem.check_theta(theta, name)
    return theta, None if weights is None else problem.check_weights(weights)


def residual_map(problem: Problem, sam: SAM, theta: ArrayLike, weights: ArrayLike | None = None) -> Array:
    """G(θ; w) = ∇F_w(ŵ) + λ_in ŵ + λ_out θ, ŵ = θ + ε(θ; g), shape (d,) (module docstring).

    Decoupled mode: G = ∇F_w(θ + ε(θ; ∇F_w(θ))) + λθ. ``weights=None`` uses ``problem.weights``.
    One SAM step is θ − η G(θ; w). Cost: two full-batch gradients.
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights)
    return descent_direction(problem, sam, theta_arr, None, w).direction


def residual_jacobian(problem: Problem, sam: SAM, theta: ArrayLike,
                      weights: ArrayLike | None = None) -> Array:
    """J = ∂G/∂θ = K(ŵ)(I + E) + λ_out I, E = P K(θ) + S, shape (d, d).

    Decoupled mode: J = H(ŵ)(I + E) + λI with E = (∂ε/∂g) H(θ) (+ ASAM's ∂ε/∂θ|_g).
    Cost: two Hessians and O(d³).
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights)
    return linearise(problem, sam, theta_arr, w).jacobian


def weight_jacobian(problem: Problem, lin: Linearisation) -> Array:
    """Rows ∂G/∂w_j = (1/n)[∇ℓ_j(ŵ) + K(ŵ) P ∇ℓ_j(θ)], shape (n, d); trusts its inputs."""
    grads_hat = problem.per_sample_grads(lin.w_hat)  # ∇ℓ_j(ŵ), (n, d)
    grads_theta = problem.per_sample_grads(lin.theta)  # ∇ℓ_j(θ), (n, d)
    M_T = lin.P_times(lin.K_hat())  # (K(ŵ) P)ᵀ = P K(ŵ) (both symmetric), O(d²) from P's structure
    return (grads_hat + grads_theta @ M_T) / problem.n  # (n, d)


def residual_weight_jacobian(problem: Problem, sam: SAM, theta: ArrayLike,
                             weights: ArrayLike | None = None) -> Array:
    """∂G/∂w, shape (n, d): row j is ∂G/∂w_j = (1/n)[∇ℓ_j(ŵ) + K(ŵ) (∂ε/∂g) ∇ℓ_j(θ)].

    The first term moves the descent gradient ∇F_w(ŵ); the second moves ŵ through g = ∇F_w(θ)
    (∂g/∂w_j = ∇ℓ_j(θ)/n). For ASAM, ∂ε/∂g is ASAM's (ρ/‖Tg‖) T (I − u uᵀ) T. Cost: two Hessians,
    two per-sample gradient matrices and O(n d²).
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights)
    return weight_jacobian(problem, linearise(problem, sam, theta_arr, w))


@dataclass(frozen=True)
class Factorised:
    """An LU factorisation of a square J with what the closed form and the diagnostics need from it.

    ``lu`` is scipy's (LU, pivots) pair for ``scipy.linalg.lu_solve``. ``condition_number`` is LAPACK's
    1-norm estimate from the factors (``gecon``: O(d²) on top of the O(d³) LU, where a 2-norm condition
    number needs an SVD, several times the LU's cost). The estimate can be low (9× on a 4 × 4 system
    in the tests), so where it exceeds ``COND_WARN / GRAY_ZONE`` — ill-conditioned systems only — the
    exact 2-norm value from an SVD replaces it, and the warning and the singular rule are decided
    exactly. ``singular``: an exact zero pivot, a non-finite factor, or σ_min ≤ d·eps·σ_max (the
    2-norm form of numpy.linalg.matrix_rank's rule).
    """

    lu: Any
    condition_number: float
    singular: bool


GRAY_ZONE = 100.0  # estimates within this factor of COND_WARN are confirmed by an SVD


def factorise(J: Array) -> Factorised:
    """LU of J with its condition number (module docstring of `Factorised`)."""
    d = J.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # exact zero pivot: judged below
        lu, piv = scipy.linalg.lu_factor(J, check_finite=False)
    if not np.all(np.isfinite(lu)) or np.any(np.diag(lu) == 0.0):
        return Factorised((lu, piv), float("inf"), True)
    rcond, info = lapack.dgecon(lu, float(np.linalg.norm(J, 1)), norm="1")
    estimate = 1.0 / float(rcond) if info == 0 and rcond > 0 else float("inf")
    if estimate <= COND_WARN / GRAY_ZONE:
        return Factorised((lu, piv), estimate, False)
    sigma = np.linalg.svd(J, compute_uv=False)  # ill-conditioned: decide exactly
    singular = not np.all(np.isfinite(sigma)) or sigma[-1] <= sigma[0] * d * np.finfo(float).eps
    return Factorised((lu, piv), float("inf") if singular else float(sigma[0] / sigma[-1]), singular)
