"""The full-batch SAM residual G(θ; w) and its derivatives: the linear algebra of every fixed-point method.

Conventions
-----------
* Full batch, sample weights w (the problem's, unless ``weights`` is given), F_w = (1/n) Σ_i w_i ℓ_i.
* G is the optimizer's residual of one full-batch SAM step's descent gradient
  (`refsam.training.sam_gradient()`, the one home of that equation), with λ_in = ``problem.l2`` (an
  L2 term in the loss) and λ_out = the optimizer's ``weight_decay`` (0 without an optimizer):

      g = ∇F_w(θ) + λ_in θ,   ŵ = θ + ε(θ; g),   G(θ; w) = ∇F_w(ŵ) + λ_in ŵ + λ_out θ

  A SAM solution θ̂ is a root, G(θ̂; w) = 0; one plain SGD step is θ − η G (with momentum, the same
  roots: the buffer vanishes there).
* Names, with H(·) = ∇²F_w(·) and K(·) = H(·) + λ_in I:

      P  = ∂ε/∂g                          (d, d), symmetric
      S  = ∂ε/∂θ|_g                        (d, d), ASAM's T = diag(|θ| + κ) term; 0 for SAM and USAM
      E  = P K(θ) + S                      (d, d), the total dε/dθ
      M  = ∂g̃/∂θ = K(ŵ)(I + E)              (d, d), the step's linearisation
      D  = ∂G/∂g̃                          diagonal: 1 for SGD and Adam, AdamW's eps/(|a| + eps)² (below)
      J  = ∂G/∂θ = D M + λ_out I           (d, d), NOT symmetric in general
      ∂G/∂w_j = (1/n) D [∇ℓ_j(ŵ) + K(ŵ) P ∇ℓ_j(θ)]      (row j of an (n, d) matrix)

  AdamW's full-batch fixed point is not SGD's root: with m = a, v = a² at stationarity its step vanishes
  where G = a/(√(a² + eps_root) + eps) + λθ = 0 elementwise (a = g̃), so D = ∂G/∂a is diagonal and
  small wherever |a| ≫ eps (`refsam.AdamW.residual_scale()`).

  Weight decay in the optimizer only (λ_in = 0, λ_out = λ): J = H(ŵ)(I + P H(θ) + S) + λI.
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
from ..models import BatchDerivatives
from ..objective import Problem, decay_matrix
from ..sam import SAM
from ..tolerances import COND_WARN
from ..training import (
    Optimizer,
    StepTerms,
    check_optimizer,
    check_problem_sam,
    perturbations,
    residual,
    root_residual,
    root_scale,
)
from ..training.linearised import (
    CurvatureProtocol,
    ExactCurvature,
    LinearisedPerturbation,
    linearise_perturbations,
)

__all__ = [
    "Factorised",
    "factorise",
    "Linearisation",
    "check_root_inputs",
    "lam_out",
    "linearise",
    "scale_rows",
    "residual_jacobian",
    "residual_map",
    "residual_weight_jacobian",
    "weight_jacobian",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Linearisation:
    """G and J at one θ (names in the module docstring), from the step's one linearisation.

    ``part`` is the full-batch step's `LinearisedPerturbation` (its
    curvatures at θ and ŵ, P, S and every product); residual = G (d,), jacobian = J (d, d);
    lam_in, lam_out: floats or arrays (d,).
    """

    theta: Array
    part: LinearisedPerturbation
    residual: Array
    jacobian: Array
    lam_in: float | Array
    lam_out: float | Array
    scale: float | Array = 1.0  # D = ∂G/∂g̃ (module docstring)

    @property
    def g(self) -> Array:
        return self.part.g

    @property
    def w_hat(self) -> Array:
        return self.part.w_hat

    @property
    def H_theta(self) -> Array:
        """C(θ), the curvature at θ (the Hessian by default), (d, d)."""
        return self.part.at_theta.matrix()

    @property
    def H_hat(self) -> Array:
        """C(ŵ), (d, d)."""
        return self.part.at_w_hat.matrix()

    def P_times(self, A: Array) -> Array:
        """P A = (∂ε/∂g) A for a block A (d, k): O(dk) from P's structure."""
        return self.part.P(A)

    def K_hat(self) -> Array:
        """K(ŵ) = C(ŵ) + λ_in I (diag(λ_in) for a per-coordinate λ), (d, d)."""
        return self.H_hat + decay_matrix(self.lam_in, self.H_hat.shape[0])


def lam_out(optimizer: Optimizer | None) -> float | Array:
    """λ_out, the optimizer's weight decay at the unperturbed point (0 without an optimizer)."""
    return 0.0 if optimizer is None else optimizer.weight_decay


def linearise(problem: Problem, sam: SAM, theta: Array, weights: ArrayLike | None = None,
              terms: StepTerms | None = None,
              curvature: Callable[[BatchDerivatives], CurvatureProtocol] | None = None,
              optimizer: Optimizer | None = None) -> Linearisation:
    """G and J at θ (module docstring) on the full batch; trusts its inputs.

    J = M + λ_out I with M the step's `jacobian()`
    (the one formula). Cost: two Hessians and one d × d matrix product. ``terms``: the full-batch step at
    θ if the caller has it already (its g and ŵ are used as given). ``curvature``: builds C(x) from the
    derivatives at x (`refsam.influence.operators`); None: the exact Hessian. ``optimizer``: whose
    weight decay is λ_out (None: 0).
    """
    g, w_hat = (None, None) if terms is None else (terms.g, terms.w_hat)
    parts = perturbations(problem, sam, theta, None, weights, g, w_hat)
    (part,) = linearise_perturbations(problem, sam, theta, parts, curvature or ExactCurvature)
    decay = lam_out(optimizer)
    descent = parts[0].descent
    assert descent is not None  # perturbations(..., descent=True)
    D = root_scale(optimizer, theta, descent)
    jacobian = root_jacobian(D, part.jacobian(), decay)  # J = D K(ŵ)(I + E) + λ_out
    G = root_residual(optimizer, theta, descent)
    return Linearisation(theta, part, G, jacobian, problem.l2, decay, D)


def root_jacobian(D: float | Array, M: Array, lam_out: float | Array) -> Array:
    """J = D M + λ_out I, shape (d, d), from M = ∂g̃/∂θ: K(ŵ)(I + E) for the full variant, H + λ_in I
    (at ŵ or θ) for the ablations."""
    return scale_rows(D, M) + decay_matrix(lam_out, M.shape[0])


def symmetric_jacobian(variant: str, rho: float, D: float | Array) -> bool:
    """Whether J is symmetric (what CG needs): the ablations and ρ = 0 have J = D (H + λ_in) + λ_out,
    symmetric only where D is a scalar (SGD, Adam; not AdamW's diagonal); the full variant at ρ > 0 never."""
    return (variant != "full" or rho == 0.0) and np.ndim(D) == 0


def scale_rows(D: float | Array, A: Array) -> Array:
    """D A for the diagonal D of `Linearisation` (a float or (d,)), A (d,) or (d, k)."""
    if isinstance(D, float):
        return A if D == 1.0 else D * A
    return D[:, None] * A if A.ndim == 2 else D * A


def check_root_inputs(problem: object, sam: object, theta: ArrayLike, name: str = "theta",
                      weights: ArrayLike | None = None,
                      optimizer: object = None) -> tuple[Array, Array | None]:
    """Validate (problem, sam, θ, weights, optimizer) at the public boundary of the fixed-point methods."""
    problem, sam = check_problem_sam(problem, sam)
    sam.root_rule()  # one step map, or NoStepMapError
    if optimizer is not None:
        check_optimizer(optimizer, problem.d)
    if sam.m_sharpness is not None and sam.m_sharpness < problem.n:
        raise InvalidInputError(
            f"`sam` uses m-sharpness (m_sharpness={sam.m_sharpness} < n={problem.n}): the "
            f"fixed-point methods and the closed form do not support it; "
            f"refsam.trajectory_influence is exact for m-sharpness runs")
    theta = problem.check_theta(theta, name)
    return theta, None if weights is None else problem.check_weights(weights)


def residual_map(problem: Problem, sam: SAM, theta: ArrayLike, weights: ArrayLike | None = None, *,
                 optimizer: Optimizer | None = None) -> Array:
    """G(θ; w) = ∇F_w(ŵ) + λ_in ŵ + λ_out θ, ŵ = θ + ε(θ; g), shape (d,) (module docstring): the SGD and
    Adam residual; at ``optimizer=AdamW(...)`` AdamW's, a/(√(a² + eps_root) + eps) + λθ with a = g̃.

    With weight decay λ in the optimizer only: G = ∇F_w(θ + ε(θ; ∇F_w(θ))) + λθ. ``weights=None`` uses
    ``problem.weights``; ``optimizer=None``: no optimizer weight decay. Cost: two full-batch gradients.
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights, optimizer=optimizer)
    return residual(problem, sam, optimizer, theta_arr, w)


def residual_jacobian(problem: Problem, sam: SAM, theta: ArrayLike, weights: ArrayLike | None = None, *,
                      optimizer: Optimizer | None = None) -> Array:
    """J = ∂G/∂θ = D K(ŵ)(I + E) + λ_out I, E = P K(θ) + S, shape (d, d) (D = 1 but for AdamW).

    With weight decay λ in the optimizer only: J = H(ŵ)(I + E) + λI with E = (∂ε/∂g) H(θ) (+ ASAM's
    ∂ε/∂θ|_g). Cost: two Hessians and O(d³).
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights, optimizer=optimizer)
    return linearise(problem, sam, theta_arr, w, optimizer=optimizer).jacobian


def weight_jacobian(problem: Problem, lin: Linearisation) -> Array:
    """Rows ∂G/∂w_j = (1/n) D [∇ℓ_j(ŵ) + K(ŵ) P ∇ℓ_j(θ)], shape (n, d); trusts its inputs."""
    rows = scale_rows(lin.scale, lin.part.weight_rows().T).T  # (n, d)
    return np.asarray(rows / problem.n, dtype=np.float64)


def residual_weight_jacobian(problem: Problem, sam: SAM, theta: ArrayLike,
                             weights: ArrayLike | None = None, *,
                             optimizer: Optimizer | None = None) -> Array:
    """∂G/∂w, shape (n, d): row j is ∂G/∂w_j = (1/n) D [∇ℓ_j(ŵ) + K(ŵ) (∂ε/∂g) ∇ℓ_j(θ)].

    The first term moves the descent gradient ∇F_w(ŵ); the second moves ŵ through g = ∇F_w(θ)
    (∂g/∂w_j = ∇ℓ_j(θ)/n). For ASAM, ∂ε/∂g is ASAM's (ρ/‖Tg‖) T (I − u uᵀ) T. D = ∂G/∂g̃ is 1 for SGD,
    Adam and ``optimizer=None`` (a weight decay does not depend on w) and AdamW's diagonal at its fixed
    point: pass the same ``optimizer`` as to `residual_jacobian()`. Cost: two Hessians, two per-sample
    gradient matrices and O(n d²).
    """
    theta_arr, w = check_root_inputs(problem, sam, theta, weights=weights, optimizer=optimizer)
    return weight_jacobian(problem, linearise(problem, sam, theta_arr, w, optimizer=optimizer))


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
