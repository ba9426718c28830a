"""Closed-form (Hessian-based) influence at a verified SAM fixed point.

Conventions
-----------
* Influence of training point j on f: I_j(f) = ∂ f(θ̂(w)) / ∂ w_j at the problem's weights (w = 1 by
  default), where θ̂(w) is the root of G(θ; w) (`refsam.influence.fixed_point`). −I_j(f) predicts
  the change of f when j is removed (Δw_j = −1). Koh & Liang's I_up,loss = n · I_j.
* Full batch, F_w = (1/n) Σ_i w_i ℓ_i, so every ∂/∂w_j carries the factor 1/n.
* Implicit function theorem on G(θ̂(w); w) = 0, with J = ∂G/∂θ (d, d, not symmetric):

      dθ̂/dw_j = −J⁻¹ ∂G/∂w_j
      ∂G/∂w_j = (1/n) [ ∇ℓ_j(ŵ) + (H(ŵ) + λ_in I) (∂ε/∂g) ∇ℓ_j(θ̂) ]           (ŵ = θ̂ + ε̂)
      I_j(f)  = ∇f(θ̂)ᵀ dθ̂/dw_j = −[J⁻ᵀ ∇f(θ̂)]ᵀ ∂G/∂w_j

  λ_in = the loss's ``l2`` (0 when the weight decay is the optimizer's only: the paper's case). One LU
  factorisation of J, one triangular solve per test function, all n training points at once.
* The optimizer's weight decay λ_out is part of G (and of J): it comes from ``optimizer=``, or from the
  `FixedPoint` passed as ``theta``; None: no weight decay.
* Variants (ablations that measure what the SAM terms are worth):
      "full"    the exact derivative above
      "frozen"  ε̂ treated as a constant: J = H(ŵ) + ΛI, ∂G/∂w_j = ∇ℓ_j(ŵ)/n (Koh–Liang at ŵ)
      "erm"     SAM ignored:                J = H(θ̂) + ΛI, ∂G/∂w_j = ∇ℓ_j(θ̂)/n (Koh–Liang at θ̂)
  (Λ = λ_in + λ_out, all the L2 the objective carries.) With AdamW's fixed point (its residual's diagonal
  D = ∂G/∂g̃ ≠ I, `refsam.influence.linearisation`) every J is D (H + λ_in I) + λ_out I and every
  ∂G/∂w_j carries D.
  All variants take the test gradient at θ̂ (the trained weights).
* Shapes: X_test (m, p) → result (n, m); parameter influence (n, d); self-influence (n,).

When it is exact: θ̂ is a root (‖G(θ̂)‖ = 0 to rounding) and J is nonsingular. Every function here
checks ‖G(θ̂)‖ ≤ ``root_tol`` first; otherwise ``on_unverified="raise"`` (default) raises
`UnverifiedRootError`, and ``"warn"`` returns the (approximate) result with an
`UnverifiedRootWarning` that states the residual. Whether SAM training actually reaches θ̂ is
a separate question: see `refsam.influence.fixed_point.fixed_point_diagnostics()` (spectral radius
of I − η J).
Cost: two d×d Hessians, O(n d² + d³), plus O(d²) per test function. Derivation: docs/closed_form.md.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, SingularSystemError, check_finite_result
from ..objective import Problem, decay_matrix, reuse_derivatives
from ..sam import SAM
from ..tolerances import COND_WARN, ROOT_TOL
from ..training import Optimizer, StepTerms, root_residual, root_scale, sam_gradient
from ..validation import check_choice, check_positive
from .fixed_point import FixedPoint, no_root_reason
from .linearisation import (
    Linearisation,
    check_root_inputs,
    factorise,
    lam_out,
    linearise,
    root_jacobian,
    scale_rows,
    symmetric_jacobian,
    weight_jacobian,
)
from .methods import CLOSED_FORM_VARIANTS
from .operators import CURVATURES, SystemOperators
from .solvers import (
    SolveInfo,
    SolverConvergenceWarning,
    check_cg_symmetric,
    check_solver_options,
    relative_residual,
    solve_iteratively,
)

__all__ = [
    "ON_UNVERIFIED",
    "VARIANTS",
    "HyperparameterSensitivity",
    "UnverifiedRootError",
    "UnverifiedRootWarning",
    "hessian_influence",
    "hyperparameter_sensitivity",
    "parameter_influence",
    "self_influence",
]

VARIANTS = CLOSED_FORM_VARIANTS  # ("full", "frozen", "erm"), from the method table
ON_UNVERIFIED = ("raise", "warn")

Array = NDArray[np.float64]


class UnverifiedRootError(InvalidInputError):
    """``theta`` is not a root of G to within ``root_tol``: the closed form would not be exact."""

    def __init__(self, message: str, residual: float) -> None:
        super().__init__(message)
        self.residual = float(residual)


class UnverifiedRootWarning(RuntimeWarning):
    """Issued with ``on_unverified="warn"``: the result is an approximation at a non-root."""


@dataclass(frozen=True)
class HyperparameterSensitivity:
    """dθ/dρ, dθ/dλ (the optimizer's weight decay) and dθ/dλ₂ (the loss's ``l2``), each shape (d,), or None
    where that λ is per coordinate (one derivative is for one number).

    At a root (`hyperparameter_sensitivity()`), with J = ∂G/∂θ:

    d_rho          = −J⁻¹ ∂G/∂ρ,   ∂G/∂ρ = D (H(ŵ) + λ_in I) ∂ε/∂ρ
    d_weight_decay = −J⁻¹ ∂G/∂λ,   ∂G/∂λ = θ̂                                  (λθ at the unperturbed point)
    d_l2           = −J⁻¹ ∂G/∂λ₂,  ∂G/∂λ₂ = D [ŵ + (H(ŵ) + λ_in I)(∂ε/∂g) θ̂]  (the L2 gradient moves ε too)

    (D = ∂G/∂g̃: 1 for SGD and Adam, AdamW's diagonal at its root.)

    Through a run (`trajectory_hyperparameter_sensitivity()`) the same derivatives of θ_T, and

    d_lr_scale     = dθ_T/ds for the whole learning-rate schedule scaled, η_t → s η_t, at s = 1.

    At a root d_lr_scale is 0: no optimizer's residual reads η (SGD's and Adam's g̃ + λθ, AdamW's
    `residual`), so scaling η moves how a run approaches the root, never the root.
    """

    d_rho: Array
    d_weight_decay: Array | None
    d_l2: Array | None
    d_lr_scale: Array | None = None


# -- the linear system ----------------------------------------------------------------------------------
def root_optimizer(theta: object, optimizer: Optimizer | None) -> Optimizer | None:
    """The optimizer of a root: ``optimizer`` if given, else the one a FixedPoint carries (or None)."""
    if optimizer is None and isinstance(theta, FixedPoint):
        return theta.optimizer
    return optimizer


def _prepare(problem: Problem, sam: SAM, theta: Any, optimizer: Optimizer | None, variant: str,
             root_tol: float, on_unverified: str, X_test: Any = None, y_test: Any = None) -> tuple[Any, ...]:
    """Validate once and apply the root rule; returns (θ̂, variant, the step terms at θ̂, X_test, y_test).

    The root rule needs only G (two gradients); the Hessians are built by `_system()`, each variant
    only those it uses."""
    if isinstance(theta, FixedPoint):
        theta = theta.theta
    theta, _ = check_root_inputs(problem, sam, theta, optimizer=optimizer)
    variant = check_choice("variant", variant, VARIANTS)
    on_unverified = check_choice("on_unverified", on_unverified, ON_UNVERIFIED)
    root_tol = check_positive("root_tol", root_tol)
    if X_test is not None:
        X_test, y_test = problem.check_test(X_test, y_test)
    terms = sam_gradient(problem, sam, theta)
    G = root_residual(optimizer, theta, terms.descent)
    residual = float(np.linalg.norm(G))
    if not residual <= root_tol:
        message = (f"`theta` is not a verified root of the SAM residual G: ‖G(theta)‖ = {residual:.3e} > "
                   f"root_tol={root_tol:.1e}, so the closed-form influence is only an approximation. "
                   f"Polish it with refsam.solve_fixed_point(problem, sam, theta, optimizer=...), or pass "
                   f"on_unverified='warn' to accept the approximation.")
        proof = no_root_reason(problem, sam, optimizer)
        if proof is not None:
            message += " Moreover, " + proof
        if on_unverified == "raise":
            raise UnverifiedRootError(message, residual)
        warnings.warn(message, UnverifiedRootWarning, stacklevel=3)
    return theta, variant, terms, X_test, y_test


def _weight_matrix(problem: Problem, lin: Linearisation | None, point: Array, D: float | Array) -> Array:
    """∂G/∂w (n, d) of a variant as a matrix: the full variant's from the Linearisation, an ablation's
    D ∇ℓ_j(point)/n. (Products G_w V without the matrix: `SystemOperators`.)"""
    if lin is not None:
        return weight_jacobian(problem, lin)  # (n, d)
    return np.asarray(scale_rows(D, problem.per_sample_grads(point).T).T / problem.n, dtype=np.float64)


def _system(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array, terms: StepTerms,
            variant: str) -> tuple[Any, Linearisation | None, Array, Array | None, float | Array]:
    """(LU factors of J, the Linearisation for "full" else None, the point an ablation's ∂G/∂w is taken
    at, its Hessian there, and D) for the variant (module docstring): "full" builds both Hessians and E;
    "frozen" only H(ŵ); "erm" only H(θ̂)."""
    D = root_scale(optimizer, theta, terms.descent)
    lin = None
    if variant == "full":
        lin = linearise(problem, sam, theta, terms=terms, optimizer=optimizer)  # G from the root check
        return _checked_factors(lin.jacobian, variant), lin, theta, None, D
    point = terms.w_hat if variant == "frozen" else theta
    H = problem.hessian(point)
    # J = D (H + λ_in) + λ_out: for SGD and Adam (D = 1) H + Λ, Λ = (λ_in + λ_out) I or diag
    J = root_jacobian(D, H + decay_matrix(problem.l2, problem.d), lam_out(optimizer))
    return _checked_factors(J, variant), None, point, H, D


def _checked_factors(J: Array, variant: str) -> Any:
    """LU factors of J, refusing a singular J and warning of an ill-conditioned one."""
    # Singular relative to its own scale (linearisation.factorise: a zero pivot or σ_min ≤ d·eps·σ_max). A
    # finite cond (8.8e17 for a constant feature beside the bias) still leaves an exact zero pivot.
    factors = factorise(J)
    if factors.singular:
        raise SingularSystemError(
            f"∂G/∂θ ({variant!r} variant) is singular at `theta` (σ_min/σ_max at most d·eps, or an "
            f"exact zero pivot): the root is not isolated "
            f"and the closed form is undefined — e.g. a constant feature beside the bias, or a direction "
            f"no sample moves. Use weight decay > 0 (softmax needs it) or trajectory influence.")
    cond = factors.condition_number
    if cond > COND_WARN:
        warnings.warn(f"∂G/∂θ ({variant!r} variant) has condition number {cond:.2e}: the closed-form "
                      f"influence may have lost most of its digits.", RuntimeWarning, stacklevel=4)
    return factors.lu


# -- public functions -----------------------------------------------------------------------------------
@reuse_derivatives()  # θ̂ and ŵ: one pass over X each for the root check, Hessians and products
def hessian_influence(problem: Problem, sam: SAM, theta: ArrayLike | FixedPoint, X_test: ArrayLike,
                      y_test: ArrayLike, variant: str = "full", *, solver: str = "direct",
                      curvature: str = "exact", return_info: bool = False, root_tol: float = ROOT_TOL,
                      on_unverified: str = "raise", optimizer: Optimizer | None = None,
                      **options: Any) -> Any:
    """I_j(test loss k) at the SAM root ``theta``, shape (n_train, n_test).

    entry [j, k] = ∂ ℓ(z_k^test, θ̂(w)) / ∂ w_j = −[J⁻ᵀ ∇ℓ_k^test(θ̂)]ᵀ ∂G/∂w_j   (module docstring).
    −entry [j, k] is the first-order prediction of the change of test loss k when j is removed.

    Parameters
    ----------
    problem : Problem
        The training problem (full batch) the root belongs to.
    sam : SAM
        The SAM rule the root belongs to.
    theta : array (d,) or FixedPoint
        θ̂, a root of G (checked: see ``root_tol`` / ``on_unverified``). A FixedPoint brings its optimizer.
    X_test : array (m, p)
        The test points whose losses are the functions f_k.
    y_test : int array (m,)
        Their labels.
    variant : {"full", "frozen", "erm"}
    solver : {"direct", "gmres", "bicgstab", "cg", "lissa", "arnoldi"}
        How Jᵀ v = ∇f is solved (`refsam.influence.solvers`): "direct" (LU, the default) or
        matrix-free from Hessian-vector products. "cg" only where J is symmetric (not the full SAM J).
    curvature : {"exact", "gauss_newton", "kfac", "ekfac"}
        What stands in for every Hessian H(·) in J and ∂G/∂w (`refsam.influence.operators`);
        "exact" is the exact influence, the others approximations of it.
    return_info : bool
        Also return a `SolveInfo` (cost in curvature products, residual,
        iterations, seconds): ``(influence, info)``.
    root_tol : float > 0
        θ̂ is a verified root when ‖G(θ̂)‖₂ ≤ root_tol.
    on_unverified : {"raise", "warn"}
        What to do at a non-root: raise `UnverifiedRootError` (default) or warn
        (`UnverifiedRootWarning`) and return the approximation.
    optimizer : Optimizer, optional
        The base optimizer of the run the root belongs to: its weight decay is part of G (default: the
        FixedPoint's; with an array θ̂ and None, no weight decay).
    **options
        The solver's options, e.g. ``rtol``, ``atol``, ``maxiter`` (gmres, bicgstab, cg), ``depth``,
        ``scale``, ``damping``, ``repetitions``, ``batch_size`` (lissa), ``rank`` (arnoldi).

    Returns
    -------
    array (n_train, n_test)
        The influences; ``(array, SolveInfo)`` with ``return_info=True``.

    Notes
    -----
    Cost ("direct"): O(n d² + d³) once, then O(d² + d n) per test point. An iterative solver costs its
    products (two Hessian-vector products per Jᵀv for the full variant) and never forms a d × d matrix.
    """
    if X_test is None or y_test is None:
        raise InvalidInputError(f"`{'X_test' if X_test is None else 'y_test'}` must be an array of test "
                                f"points, got None")
    # up front, as far as it is known before the root (D = 1 here; AdamW's D is checked once it is known)
    solver, options = check_solver_options(solver, options, symmetric_jacobian(str(variant), _rho(sam), 1.0))
    curvature = check_choice("curvature", curvature, CURVATURES)
    optimizer = root_optimizer(theta, optimizer)
    theta_hat, variant, terms, X_arr, y_arr = _prepare(problem, sam, theta, optimizer, variant, root_tol,
                                                       on_unverified, X_test, y_test)
    test_grads = problem.model.per_sample_grads(theta_hat, X_arr, y_arr).T  # ∇f_k(θ̂), (d, m)
    start = time.perf_counter()
    n_curvatures = 2 if variant == "full" else 1
    iterations, converged, extra = 1, True, dict[str, Any]()
    if solver == "direct" and curvature == "exact":
        lu, lin, _, H, _ = _system(problem, sam, optimizer, theta_hat, terms, variant)
        V = scipy.linalg.lu_solve(lu, test_grads, trans=1)  # v_k = J⁻ᵀ ∇f_k, (d, m)
        ops = SystemOperators(problem, sam, optimizer, theta_hat, variant, curvature, terms)
        if lin is not None:  # the Hessians the LU was built from serve the products too
            ops.at_hat.adopt(lin.H_hat)
            ops.at_theta.adopt(lin.H_theta)
        elif H is not None:
            ops.at_point.adopt(H)
        influence = -ops.weight_jacobian.matmat(V)  # I[j, k] = −(∂G/∂w_j)ᵀ v_k, (n, m), no G_w matrix
        seconds = time.perf_counter() - start
        products = n_curvatures * problem.d  # the Hessians' columns
    else:
        ops = SystemOperators(problem, sam, optimizer, theta_hat, variant, curvature, terms)
        check_cg_symmetric(solver, ops.symmetric)  # D is known only at the root: AdamW's is not scalar
        if solver == "direct":
            lu = _checked_factors(ops.dense_jacobian(), variant)
            V = scipy.linalg.lu_solve(lu, test_grads, trans=1)
            ops.count[0] += n_curvatures * problem.d
        else:
            stochastic = None
            if options.get("batch_size") is not None:
                def stochastic(rng: np.random.Generator) -> Any:
                    return ops.minibatch_T(rng, options["batch_size"])
            V, iterations, converged, extra = solve_iteratively(ops.jacobian_T, test_grads, solver, options,
                                                                ops.count, stochastic)
        influence = -ops.weight_jacobian.matmat(V)
        seconds = time.perf_counter() - start
        products = ops.products
    influence = check_finite_result(f"hessian_influence(solver={solver!r})", influence)
    if converged and not return_info:
        return influence
    residual = relative_residual(ops.jacobian_T, V, test_grads)  # not counted: refsam's own check
    if solver in ("gmres", "bicgstab", "cg") and not converged:
        warnings.warn(f"solver={solver!r} stopped before its tolerance (rtol={options['rtol']:g}, "
                      f"maxiter={options['maxiter']}); relative residual {residual:.2e}",
                      SolverConvergenceWarning, stacklevel=2)
    if not return_info:
        return influence
    return influence, SolveInfo(solver, curvature, products, iterations, residual, converged, seconds,
                                extra.get("spectral_radius"), extra.get("rank"))


def _rho(sam: object) -> float:
    """ρ for the solver check, which runs first; a `sam` that is not a SAM is refused by _prepare next."""
    return float(sam.rho) if isinstance(sam, SAM) else 0.0


@reuse_derivatives()
def parameter_influence(problem: Problem, sam: SAM, theta: ArrayLike | FixedPoint, variant: str = "full", *,
                        root_tol: float = ROOT_TOL, on_unverified: str = "raise",
                        optimizer: Optimizer | None = None) -> Array:
    """dθ̂/dw_j = −J⁻¹ ∂G/∂w_j for every j, shape (n_train, d) (row j). Arguments as
    `hessian_influence()`. Cost: O(n d² + d³)."""
    optimizer = root_optimizer(theta, optimizer)
    theta_hat, variant, terms, _, _ = _prepare(problem, sam, theta, optimizer, variant, root_tol,
                                               on_unverified)
    lu, lin, point, _, D = _system(problem, sam, optimizer, theta_hat, terms, variant)
    rows = -scipy.linalg.lu_solve(lu, _weight_matrix(problem, lin, point, D).T).T  # row j: −J⁻¹ ∂G/∂w_j
    return np.asarray(rows, dtype=np.float64)


@reuse_derivatives()
def self_influence(problem: Problem, sam: SAM, theta: ArrayLike | FixedPoint, variant: str = "full", *,
                   root_tol: float = ROOT_TOL, on_unverified: str = "raise",
                   optimizer: Optimizer | None = None) -> Array:
    """I_j(ℓ_j) = ∇ℓ_j(θ̂)ᵀ dθ̂/dw_j, shape (n_train,).

    The derivative of training point j's own (unweighted) loss ℓ_j(θ̂(w)) with respect to its own weight
    w_j; usually negative (up-weighting a point lowers its loss). −I_j(ℓ_j) predicts how much ℓ_j rises
    when j is removed, the usual signal for mislabelled or atypical points. Arguments as
    `hessian_influence()`.
    """
    theta_arr = theta.theta if isinstance(theta, FixedPoint) else theta
    d_theta = parameter_influence(problem, sam, theta, variant, root_tol=root_tol,
                                  on_unverified=on_unverified, optimizer=optimizer)  # (n, d)
    grads = problem.per_sample_grads(problem.check_theta(theta_arr))  # ∇ℓ_j(θ̂), (n, d)
    return np.asarray(np.einsum("jd,jd->j", grads, d_theta), dtype=np.float64)


@reuse_derivatives()
def hyperparameter_sensitivity(problem: Problem, sam: SAM, theta: ArrayLike | FixedPoint, *,
                               root_tol: float = ROOT_TOL, on_unverified: str = "raise",
                               optimizer: Optimizer | None = None) -> HyperparameterSensitivity:
    """dθ̂/dρ, dθ̂/dλ (optimizer) and dθ̂/dλ₂ (loss) at the root ``theta`` (equations in
    `HyperparameterSensitivity`; a per-coordinate λ gives None for its derivative; dθ̂/ds of the
    learning-rate scale is 0).

    ∂ε/∂ρ = ε/ρ (every rule is linear in ρ); with GSAM's or the gradient-norm penalty's direction both
    derivatives go through it (ġ̃ = A_g ġ + A_p ġ^p). Same root check and arguments as `hessian_influence()`.
    Cost: O(d³).
    """
    optimizer = root_optimizer(theta, optimizer)
    theta_hat, _, terms, _, _ = _prepare(problem, sam, theta, optimizer, "full", root_tol, on_unverified)
    lu, lin, _, _, D = _system(problem, sam, optimizer, theta_hat, terms, "full")
    assert lin is not None  # "full" always linearises (for the type checker)
    K_hat, part = lin.K_hat(), lin.part  # K(ŵ) = H(ŵ) + λ_in I; the step's direction: ġ̃ = A_g ġ + A_p ġ^p
    dG_drho = scale_rows(D, part.direction(np.zeros_like(theta_hat), K_hat @ sam.d_rho(theta_hat, part.u)))
    dG_dlam = theta_hat  # ∂(λθ)/∂λ at the unperturbed point
    # ∂g/∂λ₂ = θ̂, which moves ε as well: ∂g^p/∂λ₂ = ŵ + K(ŵ) P θ̂
    dG_dl2 = scale_rows(D, part.direction(theta_hat, lin.w_hat + K_hat @ lin.P_times(theta_hat)))

    def solve(rhs: Array, lam: float | Array) -> Array | None:
        return None if np.ndim(lam) else -scipy.linalg.lu_solve(lu, rhs)

    return HyperparameterSensitivity(d_rho=-scipy.linalg.lu_solve(lu, dG_drho),
                                     d_weight_decay=solve(dG_dlam, lam_out(optimizer)),
                                     d_l2=solve(dG_dl2, problem.l2),
                                     d_lr_scale=np.zeros_like(theta_hat))  # the root never reads η
