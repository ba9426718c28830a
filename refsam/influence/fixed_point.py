"""Fixed points of the full-batch SAM step map: diagnostics, the no-root theorem and the root solvers.

Conventions
-----------
* G(θ; w) is the full-batch residual of `refsam.influence.linearisation` (the optimizer's residual
  of one SAM step's descent gradient: g̃ + λθ for SGD with weight decay λ), J = ∂G/∂θ its Jacobian. A
  SAM solution θ̂ is a root, G(θ̂; w) = 0. The optimizer comes from the caller (``optimizer=``) or the
  `FixedPoint`; its weight decay is part of G, its η and momentum decide stability only.
* Full-batch SAM with step η converges locally to θ̂ iff the spectral radius of I − η J is < 1.
  With momentum (μ, dampening τ) the iteration runs on (δθ_t, buf_{t−1}) and its linearisation is

      heavy ball:  [[I − η(1−τ)J,        −ημ I ], [(1−τ)J, μI]]
      Nesterov:    [[I − η(1+μ(1−τ))J,   −ημ² I], [(1−τ)J, μI]]

  Both blocks are polynomials in J, so each eigenvalue m of J gives the 2 × 2 matrix with m in place of
  J, and the spectral radius is the largest modulus of their eigenvalues (`spectral_radius()`). At
  a root the buffer is 0 and so is the step: momentum has the same roots and the same closed form.
  `FixedPoint` reports it, with ‖G(θ̂)‖ and the condition number of J: the three numbers that say
  whether the closed-form influence (`refsam.influence.closed_form`) is exact and usable.
* With no optimizer weight decay (the L2 term, if any, in the loss) the SAM or ASAM rule with ρ > 0 has
  NO root when every loss is convex (``model.convex``): a root would put ŵ at a minimiser θ* of the
  convex F + r, but then gᵀ(θ − θ*) = −gᵀε < 0, which contradicts the monotonicity of a convex
  function's gradient. Training ends in a 2-cycle around θ*.
  `solve_fixed_point()` says so up front (`NoFixedPointError`) instead of iterating.
See docs/closed_form.md for the derivation.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg
from numpy.typing import ArrayLike, NDArray

from ..errors import RefsamError
from ..objective import Problem, reuse_derivatives
from ..sam import SAM, ZeroGradientError
from ..tolerances import ROOT_TOL
from ..training import SGD, Optimizer, residual
from ..validation import check_choice, check_positive, check_positive_int, check_progress
from .linearisation import check_root_inputs, factorise, lam_out, linearise

__all__ = [
    "SOLVER_METHODS",
    "FixedPoint",
    "FixedPointError",
    "NoFixedPointError",
    "fixed_point_diagnostics",
    "no_root_reason",
    "solve_fixed_point",
    "spectral_radius",
]

Array = NDArray[np.float64]

SOLVER_METHODS = ("auto", "ptc", "newton", "hybr", "lm")
TOL_DEFAULT = ROOT_TOL  # ‖G‖ at which a root counts as verified (refsam.tolerances)
POLISH_STEPS = 3  # extra full Newton steps after reaching `tol`, kept only while ‖G‖ keeps falling
ARMIJO_C = 1e-4  # sufficient decrease ‖G(θ + αs)‖ ≤ (1 − c α)‖G(θ)‖ for the damped Newton step
MIN_STEP = 2.0**-30  # smallest backtracking step before the damped Newton method declares a stall
# Pseudo-transient continuation ("ptc", `_pseudo_transient`): (J + δI) s = −G, ‖s‖ ≤ Δ, δ ≥ PTC_GUARD·ν
PTC_IMPLICIT = 0.5  # accept s when it solves G(θ + s) + δ s = 0 to PTC_IMPLICIT·‖G(θ)‖ (or lowers ‖G‖)
PTC_CONTRACT = 0.5  # chord corrections continue while each shrinks the implicit equation's residual by this
PTC_GUARD = 2.0  # δ ≥ 2ν, ν = −min Re eig(J) > 0: the flow's unstable directions are followed, not solved
PTC_CHORD = 10  # chord corrections of each trial step at most (one G and O(d²) each)
PTC_LAG = 5  # accepted steps from where a Jacobian was taken, at most (`_pseudo_transient`)
PTC_KRYLOV = True  # where a chord correction does not contract, an inexact Newton one (`_krylov_correction`)
PTC_FORCING = 0.1  # GMRES's relative tolerance in an inexact Newton correction (its forcing term)
PTC_KRYLOV_ITER = 40  # GMRES iterations per inexact Newton correction, at most (a product of J each, +1)
PTC_MIN_RADIUS = 1e-14  # trust radius / max(‖θ‖, 1) below which the method declares a stall
PROGRESS_EVERY = 1.0  # seconds between solve_fixed_point's progress lines, at least (`_Progress`)


class FixedPointError(RefsamError, RuntimeError):
    """No verified root of G was found. ``.residual`` is ‖G‖ at the best point, ``.reason`` says why,
    ``.theta`` is that best point (or None)."""

    def __init__(self, message: str, residual: float = float("nan"), reason: str = "",
                 theta: Array | None = None) -> None:
        super().__init__(message)
        self.residual = float(residual)
        self.reason = reason
        self.theta = theta


class NoFixedPointError(FixedPointError):
    """G provably has no root for this problem and rule (see the module docstring)."""


@dataclass(frozen=True, eq=False)
class FixedPoint:
    """A candidate root θ̂ of G(θ; w) with the diagnostics that say whether it can be trusted.

    Attributes
    ----------
    theta : array (d,)              θ̂
    residual : float                ‖G(θ̂; w)‖₂
    converged : bool                residual <= tol
    iterations : int                Jacobian evaluations of G used (every method, summed under "auto")
    method : str                    "ptc", "newton", "hybr", "lm"; "none" (`fixed_point_diagnostics()`);
                                    "failed" (``raise_on_failure=False`` and no root found)
    tol : float                     the residual tolerance that defines ``converged``
    jacobian : array (d, d)         ∂G/∂θ at θ̂
    condition_number : float        condition number of ∂G/∂θ: LAPACK's 1-norm estimate from its LU,
                                    the exact 2-norm value where that is above 1e10 (inf if singular)
    lr : float or None              η for the stability diagnostic (the optimizer's; None without one)
    spectral_radius : float or None spectral radius of the linearised iteration (I − η ∂G/∂θ without
                                    momentum; the momentum iteration's with it); < 1 iff full-batch SAM
                                    with step η is locally attracted to θ̂. None without an optimizer.
    optimizer : Optimizer or None   the base optimizer: its weight decay is part of G, its η and momentum
                                    give the radius (None: G without weight decay, no radius)
    start_distance : float or None  ‖θ̂ − θ_0‖₂ from the solver's start (None from diagnostics). A root far
                                    from the end of a run may not be the point that run approaches.
    reason : str                    why the solver stopped ("converged", or the failed method's reason when
                                    ``raise_on_failure=False``); "" from `fixed_point_diagnostics()`
    """

    theta: np.ndarray
    residual: float
    converged: bool
    iterations: int
    method: str
    tol: float
    jacobian: np.ndarray = field(repr=False)
    condition_number: float
    lr: float | None = None
    spectral_radius: float | None = None
    start_distance: float | None = None
    optimizer: Optimizer | None = None
    reason: str = ""

    @property
    def stable(self) -> bool | None:
        """True iff full-batch SAM with step ``lr`` converges locally to θ̂ (None without ``lr``)."""
        return None if self.spectral_radius is None else bool(self.spectral_radius < 1.0)

    def describe(self) -> str:
        """A one-paragraph, human-readable verdict on this root."""
        lines = [
            f"‖G(θ̂)‖ = {self.residual:.3e} ({'verified root' if self.converged else 'NOT a root'}: "
            f"tol {self.tol:.1e}; {self.method}, {self.iterations} iterations)",
            f"cond(∂G/∂θ) = {self.condition_number:.3e}"
            + ("  (singular: the closed form is undefined)" if not np.isfinite(self.condition_number)
               else ""),
        ]
        if self.start_distance is not None:
            lines.append(f"‖θ̂ − θ_0‖ = {self.start_distance:.3e} (distance from the solver's start)")
        if self.spectral_radius is not None:
            verdict = ("stable: full-batch SAM converges here" if self.stable
                       else "unstable: full-batch SAM is repelled from this root")
            o = self.optimizer
            what = "I − η ∂G/∂θ" if not isinstance(o, SGD) or not o.momentum else (
                f"the {'Nesterov' if o.nesterov else 'heavy-ball'} iteration "
                f"(μ = {o.momentum:g}, τ = {o.dampening:g})")
            lines.append(f"spectral radius of {what} at η = {self.lr:g}: "
                         f"{self.spectral_radius:.6f} ({verdict})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"FixedPoint(residual={self.residual:.3e}, converged={self.converged}, "
                f"iterations={self.iterations}, method={self.method!r}, "
                f"condition_number={self.condition_number:.3e}, spectral_radius={self.spectral_radius})")


# -- diagnostics ----------------------------------------------------------------------------------------
def _condition_number(J: np.ndarray) -> float:
    return factorise(J).condition_number


def spectral_radius(J: ArrayLike, lr: float, optimizer: SGD | None = None) -> float:
    """The spectral radius of full-batch SAM's linearised iteration at a root with Jacobian J.

    Without momentum: max |eig(I − η J)|. With momentum, per eigenvalue m of J, the 2 × 2 matrix
    [[1 − η a m, −η b], [(1−τ) m, μ]] (a = 1 − τ, b = μ for heavy ball; a = 1 + μ(1−τ), b = μ² for
    Nesterov; module docstring), whose eigenvalues solve λ² − tr λ + det = 0. Cost: one eigen-
    decomposition of J for d ≤ DENSE_EIGEN_MAX; above, ARPACK's largest-modulus eigenvalue of the
    iteration map itself (I − ηJ, or the (2d, 2d) map of (θ, buf) with momentum) from matrix-vector
    products, falling back to the dense path if ARPACK does not converge.
    """
    J = np.asarray(J, dtype=np.float64)
    if J.shape[0] > DENSE_EIGEN_MAX:
        radius = _iterative_spectral_radius(J, lr, optimizer)
        if radius is not None:
            return radius
    if optimizer is None or not optimizer.momentum:
        return float(np.max(np.abs(np.linalg.eigvals(np.eye(J.shape[0]) - lr * J))))
    mu, tau = optimizer.momentum, optimizer.dampening
    a, b = (1.0 + mu * (1.0 - tau), mu**2) if optimizer.nesterov else (1.0 - tau, mu)
    m = np.linalg.eigvals(J).astype(complex)  # eigenvalues of J
    trace = 1.0 - lr * a * m + mu
    det = (1.0 - lr * a * m) * mu + lr * b * (1.0 - tau) * m
    root = np.sqrt(trace**2 - 4.0 * det)
    return float(np.max(np.maximum(np.abs((trace + root) / 2.0), np.abs((trace - root) / 2.0))))


DENSE_EIGEN_MAX = 256  # above this d, one ARPACK eigenvalue is cheaper than all d of them


def _iterative_spectral_radius(J: Array, lr: float, optimizer: SGD | None) -> float | None:
    """max |eig| of the linearised iteration by ARPACK (None if it does not converge)."""
    d = J.shape[0]
    if optimizer is None or not optimizer.momentum:
        def step(v: Array) -> Array:
            return v - lr * (J @ v)
        size = d
    else:
        mu, tau = optimizer.momentum, optimizer.dampening
        a, b = (1.0 + mu * (1.0 - tau), mu**2) if optimizer.nesterov else (1.0 - tau, mu)

        def step(v: Array) -> Array:  # (δθ, δbuf) -> the next (δθ, δbuf), module docstring
            theta, buf = v[:d], v[d:]
            Jt = J @ theta
            return np.concatenate([theta - lr * (a * Jt + b * buf), (1.0 - tau) * Jt + mu * buf])
        size = 2 * d
    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=step, dtype=np.float64)
    try:
        values = scipy.sparse.linalg.eigs(operator, k=1, which="LM", tol=1e-12, ncv=min(size - 1, 40),
                                          maxiter=200, return_eigenvectors=False, v0=np.ones(size))
    except scipy.sparse.linalg.ArpackNoConvergence:
        return None
    return float(np.abs(values[0]))


def _make_fixed_point(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                      weights: Array | None, iterations: int, method: str, tol: float,
                      theta0: Array | None = None, reason: str = "") -> FixedPoint:
    lin = linearise(problem, sam, theta, weights, optimizer=optimizer)
    residual_norm = float(np.linalg.norm(lin.residual))
    lr = None if optimizer is None else optimizer.scalar_lr()
    radius = None
    if lr is not None and isinstance(optimizer, SGD):
        radius = spectral_radius(lin.jacobian, lr, optimizer)
    return FixedPoint(theta=theta, residual=residual_norm, converged=bool(residual_norm <= tol),
                      iterations=iterations, method=method, tol=tol, jacobian=lin.jacobian,
                      condition_number=_condition_number(lin.jacobian), lr=lr, spectral_radius=radius,
                      start_distance=None if theta0 is None else float(np.linalg.norm(theta - theta0)),
                      optimizer=optimizer, reason=reason)


@reuse_derivatives()
def fixed_point_diagnostics(problem: Problem, sam: SAM, theta: ArrayLike, *,
                            optimizer: Optimizer | None = None, tol: float = TOL_DEFAULT,
                            weights: ArrayLike | None = None) -> FixedPoint:
    """The root diagnostics at a given θ (e.g. the end of a training run), without solving.

    Returns a `FixedPoint` with ``method="none"``, ``iterations=0``; ``converged`` says whether θ
    is a root to within ``tol``. ``optimizer`` (e.g. the run's, ``trajectory.optimizer()``): its weight
    decay is part of G; its η and momentum choose the iteration whose spectral radius is reported (None:
    no weight decay, no radius). Cost: two Hessians, one LU and one eigen-decomposition.
    """
    theta, weights = check_root_inputs(problem, sam, theta, weights=weights, optimizer=optimizer)
    tol = check_positive("tol", tol)
    return _make_fixed_point(problem, sam, optimizer, theta, weights, 0, "none", tol)


def no_root_reason(problem: Problem, sam: SAM, optimizer: Optimizer | None = None) -> str | None:
    """Why G provably has no root for (problem, sam, optimizer), or None if no such proof applies.

    Applies when ρ > 0, the rule is SAM, ASAM or Fisher SAM with the "sam" direction (g̃ = g^p), every
    loss is convex in θ (``problem.model.convex``) and the optimizer adds no weight decay, so the
    perturbation is built from the gradient of the whole convex objective Φ = F + r: a root needs
    ∇Φ(ŵ) = 0, so ŵ = θ + ε is a minimiser θ*, and then gᵀ(θ − θ*) = −gᵀε < 0 (−ρ‖Mg‖ for SAM, −ρ‖TMg‖
    for ASAM, −ρ gᵀf⁻¹g/√(gᵀf⁻¹g) for Fisher SAM, M a perturbation mask), while convexity demands
    gᵀ(θ − θ*) ≥ 0. GSAM's and the gradient-norm penalty's directions mix g into g̃, so a root need not
    put ŵ at θ*: no claim there. With a denominator e > 0 (``norm_eps``) the claim is about the roots
    with g ≠ 0: θ* itself, where g = 0 exactly, has ε = 0 and is a degenerate root (∂ε/∂g = ρ/e there),
    one no run settles at and whose closed form would carry the factor ρ/e.
    """
    whole_objective = not np.any(lam_out(optimizer))
    if not (sam.rho > 0 and sam.rule in ("sam", "asam", "fisher") and sam.direction == "sam"
            and problem.model.convex and whole_objective):
        return None
    what = "an L2 term in the loss" if np.any(problem.l2) else "no regularisation"
    return (
        f"G(θ) = 0 has no solution for the {sam.rule.upper()} rule with rho={sam.rho} > 0 with {what} and no "
        f"optimizer weight decay on the convex {problem.model.name} objective Φ: a root would need "
        f"∇Φ(θ + ε) = 0, i.e. θ + ε = θ* (a minimiser), but then gᵀ(θ − θ*) = −gᵀε < 0 contradicts the "
        f"monotonicity of ∇Φ. Full-batch training ends in a 2-cycle around θ* instead of converging "
        f"(docs/closed_form.md). Use refsam.trajectory_influence, which is exact for the recorded run, or "
        f"weight decay in the optimizer (refsam.SGD(..., weight_decay=λ) with λ > 0)."
    )


# -- root finding ---------------------------------------------------------------------------------------
def _safe_norm(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
               weights: Array | None) -> float:
    """‖G(θ)‖, or inf where G is undefined (‖g‖ = 0 under SAM/ASAM) or not finite."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            G = residual(problem, sam, optimizer, theta, weights)
    except ZeroGradientError:
        return float("inf")
    r = float(np.linalg.norm(G))
    return r if np.isfinite(r) else float("inf")


def _safe_residual(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                   weights: Array | None) -> Array:
    """G(θ), or inf entries where G is undefined (‖g‖ = 0 under SAM/ASAM)."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return residual(problem, sam, optimizer, theta, weights)
    except ZeroGradientError:
        return np.full(problem.d, np.inf)


def _newton_direction(J: Array, G: Array) -> Array:
    """s solving J s = −G (least squares if J is singular)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
            return np.asarray(scipy.linalg.solve(J, -G), dtype=np.float64)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning):
        return np.asarray(np.linalg.lstsq(J, -G, rcond=None)[0], dtype=np.float64)


def _damped_newton(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                   weights: Array | None, tol: float, max_iter: int,
                   report: _Progress) -> tuple[Array, float, int, str]:
    """Newton on G with backtracking on ‖G‖ (Armijo), then up to POLISH_STEPS full steps past `tol`.

    Stopping rule: ‖G‖ ≤ tol and the polish steps no longer lower ‖G‖; or `max_iter` Jacobians; or a
    stall (no step length ≥ MIN_STEP lowers ‖G‖ sufficiently). Returns (θ, ‖G‖, iterations, reason).
    """
    r = _safe_norm(problem, sam, optimizer, theta, weights)
    if not np.isfinite(r):
        return theta, r, 0, "G is undefined or not finite at the starting point"
    polish_left = POLISH_STEPS
    for it in range(1, max_iter + 1):
        lin = linearise(problem, sam, theta, weights, optimizer=optimizer)
        report(it, r)
        step = _newton_direction(lin.jacobian, lin.residual)  # J s = −G
        if r <= tol:  # polishing: accept a full step only while it lowers ‖G‖
            candidate = theta + step
            r_new = _safe_norm(problem, sam, optimizer, candidate, weights)
            polish_left -= 1
            if r_new < r:
                theta, r = candidate, r_new
            if r_new >= r or polish_left == 0 or r == 0.0:
                return theta, r, it, "converged"
            continue
        alpha = 1.0
        while alpha >= MIN_STEP:
            candidate = theta + alpha * step
            r_new = _safe_norm(problem, sam, optimizer, candidate, weights)
            if r_new <= (1.0 - ARMIJO_C * alpha) * r:
                break
            alpha /= 2.0
        else:
            return theta, r, it, f"damped Newton stalled at ‖G‖ = {r:.3e} (no step lowers ‖G‖)"
        theta, r = candidate, r_new
    reason = "converged" if r <= tol else f"damped Newton reached max_iter={max_iter} at ‖G‖ = {r:.3e}"
    return theta, r, max_iter, reason


def _pseudo_transient(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                      weights: Array | None, tol: float, max_iter: int,
                      report: _Progress) -> tuple[Array, float, int, str]:
    """Pseudo-transient continuation with a trust radius: shifted Newton steps along training's flow.

    Full-batch SGD is the explicit Euler method for the flow dθ/dt = −G(θ) (step η; η/(1 − μ) with
    momentum μ), and the root training converges to is the flow's attracting equilibrium. One implicit
    Euler step of pseudo-time τ = 1/δ, linearised, is

        (J + δ I) s = −G,   δ ≥ PTC_GUARD · ν,   ν = max(0, −min Re eig(J))

    a gradient step s ≈ −G/δ at large δ and Newton's step at δ = 0. The guard keeps δ above the flow's
    unstable rates: along an eigenvalue m < 0 of J the step −g/(δ + m) points where the flow goes (away
    from a saddle), where Newton's −g/m walks into the saddle. δ is otherwise the smallest shift whose
    step fits the trust radius Δ around θ (Δ₀ = ∞: a start inside Newton's region takes Newton steps).

    Each trial step is then corrected by up to PTC_CHORD corrections of the implicit equation
    F(s) = G(θ + s) + δ s = 0 (`_implicit_step`, each kept while it shrinks ‖F‖ by PTC_CONTRACT): a
    chord correction with the factors in use (one G and O(d²)), and where that does not contract, an
    inexact Newton correction (`_krylov_correction`: GMRES on exact products of J at θ + s, two
    Hessian-vector products each, preconditioned by the factors in use). The linear step overshoots in
    the stiff directions of J (eigenvalues up to ~1 where the slow ones are ~1e-4) and J changes along the
    step where the flow's path bends (within 0.02 on benchmarks/roots.py's MLP); the corrections pull
    the step back onto the implicit equation at no Jacobian's cost. The step is accepted when it solves
    the implicit equation to PTC_IMPLICIT·‖G(θ)‖ (a backward Euler step of the flow: accepted even where
    ‖G‖ grows along the flow) or lowers ‖G‖ by the Armijo fraction.

    A Jacobian costs two Hessians and a Schur form (≈ 265 evaluations of G, or ≈ 200 products of J, on
    that MLP), so it is **lagged**: up to PTC_LAG accepted steps are taken from the point where a
    Jacobian was taken, each with its own G, before a fresh one; the Krylov corrections make up for the
    distance. Otherwise Δ shrinks after a rejected trial, Δ ← ‖s‖/4 (no new J); Δ ← 2‖s‖ after an accurate
    step, ‖s‖ after an accepted one.

    The root is the one a fresh J per step and chord corrections alone reach (a test pins it); on the
    benchmark 5 Jacobians reach it from the 2000-step end point, where a fresh one at each step took
    35. Past ‖G‖ ≤ tol, up to POLISH_STEPS full Newton steps while ‖G‖ falls (chord steps with one
    fresh J at the first iterate past tol, taken there unless the J in use is that point's; a saddle
    there, an eigenvalue of that J with negative real part, is reported as it is). One complex Schur
    form J = Z T Zᴴ per Jacobian gives ν and every shifted solve as a triangular one.

    Stopping rule: ‖G‖ ≤ tol and polished (or a root where J has an eigenvalue with negative real part:
    a saddle, reported as it is); or ``max_iter`` Jacobians; or Δ below PTC_MIN_RADIUS·max(‖θ‖, 1) (no
    step is accepted). Returns (θ, ‖G‖, Jacobians, reason); a stop short of a root says how many
    eigenvalues of J have negative real part (the iterate is not yet in the basin of a stable root).
    Cost per Jacobian: two Hessians and one Schur decomposition, O(d³); per trial step one G and up to
    PTC_CHORD corrections, O(d²) each for a chord one, up to PTC_KRYLOV_ITER + 1 products of J for a
    Krylov one.
    """
    G = _safe_residual(problem, sam, optimizer, theta, weights)
    r = float(np.linalg.norm(G))
    shifted, jacobians = _factors(problem, sam, optimizer, theta, weights, G), 1
    report(jacobians, r)
    if not (np.isfinite(r) and shifted is not None):
        return theta, float("inf"), jacobians, "G or ∂G/∂θ is undefined or not finite at the starting point"
    lagged = 0  # steps taken from `shifted.point`, where its J was taken
    radius = float("inf")  # Δ: the first step is Newton's (guarded)
    polish_left, polished = POLISH_STEPS, False  # (polished: the polish's fresh J is taken)
    while True:
        if r <= tol:  # polishing: full Newton steps while ‖G‖ falls
            if not (shifted.taken_at(theta) or polished):  # one fresh J, then chord steps
                if polish_left == 0 or r == 0.0 or jacobians >= max_iter:
                    return theta, r, jacobians, "converged"
                fresh = _factors(problem, sam, optimizer, theta, weights, G)
                jacobians, lagged, polished = jacobians + 1, 0, True
                report(jacobians, r)
                if fresh is None:
                    return theta, r, jacobians, "converged"
                shifted = fresh
            if shifted.unstable_rate > 0.0 or polish_left == 0 or r == 0.0:  # (a saddle: reported as such)
                return theta, r, jacobians, "converged"
            candidate = theta + shifted.step(0.0)
            G_new = _safe_residual(problem, sam, optimizer, candidate, weights)
            r_new = float(np.linalg.norm(G_new))
            polish_left -= 1
            if not r_new < r:
                return theta, r, jacobians, "converged"
            theta, G, r = candidate, G_new, r_new
            shifted.move_to(G)
            continue
        nu = shifted.unstable_rate  # ν, the flow's fastest unstable rate (at the J in use)
        while True:
            step, delta = shifted.step_within(PTC_GUARD * nu, radius)
            predictor = float(np.linalg.norm(step))  # ≤ Δ: what a rejection shrinks
            step, G_new, size = _implicit_step(problem, sam, optimizer, theta, weights, shifted, step, delta)
            accept, grow = _verdict(size, float(np.linalg.norm(G_new)), r)
            if accept:
                break
            if not np.isfinite(predictor):  # J + δI exactly singular
                predictor = min(radius, float(np.linalg.norm(theta)) + 1.0)
            radius = min(radius, predictor) / 4.0  # strictly shrinking: the loop ends
            if radius <= PTC_MIN_RADIUS * max(float(np.linalg.norm(theta)), 1.0):
                return theta, r, jacobians, (
                    f"ptc stalled at ‖G‖ = {r:.3e}: no step within a trust radius of "
                    f"{PTC_MIN_RADIUS:.0e}·‖θ‖ is accepted"
                    + _basin_note(shifted.eigenvalues, _where(shifted, theta, "here")))
        length = float(np.linalg.norm(step))
        radius = 2.0 * length if grow else length
        theta, G, r = theta + step, G_new, float(np.linalg.norm(G_new))
        lagged += 1  # steps taken from the point where `shifted`'s J was taken
        if lagged < PTC_LAG or r <= tol:  # the next step from the same factors
            shifted.move_to(G)
            continue
        if jacobians >= max_iter:
            return theta, r, jacobians, _out_of_budget(max_iter, r, shifted, theta)
        fresh = _factors(problem, sam, optimizer, theta, weights, G)
        jacobians, lagged = jacobians + 1, 0
        report(jacobians, r)
        if fresh is None:
            return theta, r, jacobians, f"ptc stopped at ‖G‖ = {r:.3e}: ∂G/∂θ is not finite there"
        shifted = fresh


def _implicit_step(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                   weights: Array | None, shifted: _ShiftedSolver, step: Array,
                   delta: float) -> tuple[Array, Array, float]:
    """Corrections of a trial step s of the implicit Euler equation F(s) = G(θ + s) + δ s = 0, up to
    PTC_CHORD, each kept only where it shrinks ‖F‖ by PTC_CONTRACT: a chord correction
    −(J + δI)⁻¹ F(s) with the factors of ``shifted`` (one G, O(d²)), and where that does not contract
    (J has changed between where it was taken and θ + s), the inexact Newton correction of
    `_krylov_correction` instead. Returns (s, G(θ + s), ‖F(s)‖)."""
    G_new = _safe_residual(problem, sam, optimizer, theta + step, weights)
    size = float(np.linalg.norm(G_new + delta * step))
    for _ in range(PTC_CHORD):
        F = G_new + delta * step
        trial = step + shifted.solve(delta, -F)
        G_trial = _safe_residual(problem, sam, optimizer, theta + trial, weights)
        size_trial = float(np.linalg.norm(G_trial + delta * trial))
        if PTC_KRYLOV and not size_trial <= PTC_CONTRACT * size and np.isfinite(size):
            trial = step + _krylov_correction(problem, sam, optimizer, theta + step, weights, shifted, F,
                                              delta)
            G_trial = _safe_residual(problem, sam, optimizer, theta + trial, weights)
            size_trial = float(np.linalg.norm(G_trial + delta * trial))
        if not size_trial <= PTC_CONTRACT * size:
            break
        step, G_new, size = trial, G_trial, size_trial
    return step, G_new, size


def _krylov_correction(problem: Problem, sam: SAM, optimizer: Optimizer | None, point: Array,
                       weights: Array | None, shifted: _ShiftedSolver, F: Array, delta: float) -> Array:
    """x ≈ −(J(point) + δI)⁻¹ F: the inexact Newton correction of the implicit equation at point = θ + s.

    GMRES on exact products of ∂G/∂θ at point (`SystemOperators`' J: two Hessian-vector products per
    product, no Jacobian formed), right-preconditioned by the factors of ``shifted``: x = L y with
    L = (J_lagged + δI)⁻¹ and (J + δI) L y = −F, a few iterations where the lagged J is close. Right
    preconditioning keeps GMRES's residual the true one: it stops at ‖(J + δI) x + F‖ ≤
    PTC_FORCING·‖F‖ or after PTC_KRYLOV_ITER iterations (one restart cycle; one more product for its
    final residual). nan where J is undefined at point (the correction is then rejected).

    The guard δ ≥ PTC_GUARD·ν holds for the lagged J, not necessarily for J(point): its eigenvalues are
    not known without forming it, and it fails there in 21 of 256 corrections measured on the saddle
    start of tests/3_exact/test_root_solver.py. The correction then still solves the
    same implicit equation near s (kept only where ‖F‖ halves); the root reached is pinned against the
    fresh-Jacobian solver there and on the benchmark."""
    from .operators import SystemOperators  # (operators imports FixedPoint from this module)

    weighted = problem if weights is None else problem.with_weights(weights)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            J = SystemOperators(weighted, sam, optimizer, point, "full", "exact").jacobian
    except ZeroGradientError:
        return np.full_like(F, np.nan)

    def preconditioned(y: Array) -> Array:  # (J + δI) L y
        v = shifted.solve(delta, y)
        return np.asarray(J.matvec(v) + delta * v, dtype=np.float64)

    d = F.shape[0]
    system = scipy.sparse.linalg.LinearOperator((d, d), matvec=preconditioned, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y, _ = scipy.sparse.linalg.gmres(system, -F, rtol=PTC_FORCING, atol=0.0, restart=PTC_KRYLOV_ITER,
                                         maxiter=1)
    return shifted.solve(delta, np.asarray(y, dtype=np.float64))


def _verdict(size: float, r_new: float, r: float) -> tuple[bool, bool]:
    """(accept, grow) for a corrected trial step: accept an implicit Euler step solved to PTC_IMPLICIT·‖G‖
    (it follows the flow, even where ‖G‖ grows along it) or any step that lowers ‖G‖ by the Armijo
    fraction (False for nan); grow Δ after an accurate one."""
    accept = size <= PTC_IMPLICIT * r or r_new <= (1.0 - ARMIJO_C) * r
    grow = size <= PTC_IMPLICIT**2 * r or r_new <= PTC_IMPLICIT * r
    return accept, grow


def _factors(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array, weights: Array | None,
             G: Array) -> _ShiftedSolver | None:
    """The shifted solver of ∂G/∂θ at θ for the right-hand side −G; None where J is undefined or not
    finite (one Jacobian: two Hessians, and the Schur form)."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            J = linearise(problem, sam, theta, weights, optimizer=optimizer).jacobian
    except ZeroGradientError:
        return None
    return _ShiftedSolver(J, G, theta) if np.all(np.isfinite(J)) and np.all(np.isfinite(G)) else None


def _out_of_budget(max_iter: int, r: float, shifted: _ShiftedSolver, theta: Array) -> str:
    """The stopping reason when the Jacobian budget runs out short of a root."""
    return (f"ptc reached max_iter={max_iter} at ‖G‖ = {r:.3e}"
            + _basin_note(shifted.eigenvalues, _where(shifted, theta, "at the last iterate")))


def _where(shifted: _ShiftedSolver, theta: Array, here: str) -> str:
    """Where the eigenvalues of ``shifted`` are ∂G/∂θ's: ``here`` when its J was taken at θ, else how far
    from θ (a lagged Jacobian; the budget leaves none for θ itself)."""
    if shifted.point is None or shifted.taken_at(theta):
        return here
    distance = float(np.linalg.norm(shifted.point - theta))
    return f"at the Jacobian in use, taken {distance:.1e} from the last iterate"


class _ShiftedSolver:
    """s(δ) = −(J + δI)⁻¹ G for many shifts δ from one complex Schur form J = Z T Zᴴ (T upper
    triangular, its diagonal J's eigenvalues): each s(δ) = −Z (T + δI)⁻¹ Zᴴ G is a triangular solve."""

    def __init__(self, J: Array, G: Array, point: Array | None = None) -> None:
        self.point = point  # the θ at which J was taken (None: not said)
        self.T, self.Z = scipy.linalg.rsf2csf(*scipy.linalg.schur(J))  # 3× faster than output="complex"
        self.Z_H = np.ascontiguousarray(self.Z.conj().T)  # Zᴴ, once: each solve starts with Zᴴ b
        self.eigenvalues = np.diag(self.T)
        self.unstable_rate = max(0.0, -float(np.min(self.eigenvalues.real)))  # ν = max(0, −min Re eig J)
        self.eye = np.eye(J.shape[0])
        self._shift: tuple[float, Array] | None = None  # (δ, T + δI): the last shift's matrix, reused
        self.move_to(G)

    def taken_at(self, theta: Array) -> bool:
        """Whether J is ∂G/∂θ at exactly this θ."""
        return self.point is not None and bool(np.array_equal(self.point, theta))

    def move_to(self, G: Array) -> None:
        """The same J with a new right-hand side −G (a lagged Jacobian at the next iterate)."""
        self.rhs = -(self.Z_H @ G)

    def step(self, delta: float) -> Array:
        """s(δ), shape (d,); all nan where J + δI is exactly singular."""
        return self.solve(delta, None)

    def solve(self, delta: float, b: Array | None) -> Array:
        """x = (J + δI)⁻¹ b (b = None: −G), shape (d,); all nan where J + δI is exactly singular."""
        rhs = self.rhs if b is None else self.Z_H @ b
        if self._shift is None or self._shift[0] != delta:  # (a Krylov correction solves with one δ often)
            self._shift = (delta, self.T + delta * self.eye)
        try:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                y = scipy.linalg.solve_triangular(self._shift[1], rhs, check_finite=False)
        except np.linalg.LinAlgError:
            return np.full(self.T.shape[0], np.nan)
        return np.asarray((self.Z @ y).real, dtype=np.float64)

    def step_within(self, delta_min: float, radius: float) -> tuple[Array, float]:
        """s(δ) for the smallest δ ≥ delta_min with ‖s(δ)‖ ≤ radius (bisection on log δ: ‖s(δ)‖ ≈ ‖G‖/δ
        for large δ), or s(delta_min) if that fits."""
        step = self.step(delta_min)
        if np.linalg.norm(step) <= radius:  # False for nan
            return step, delta_min
        low = max(delta_min, 1e-300)
        high = max(2.0 * low, 2.0 * (float(np.linalg.norm(self.rhs)) / radius
                                     + float(np.max(np.abs(self.eigenvalues)))))
        for _ in range(60):  # to a relative δ of about 2^-60 · log-range: far below what matters
            mid = float(np.sqrt(low * high)) if low > 1e-300 else high * 1e-8
            if np.linalg.norm(self.step(mid)) <= radius:
                high = mid
            else:
                low = mid
            if high <= low * (1.0 + 1e-3):
                break
        return self.step(high), high


def _basin_note(eigenvalues: Array, where: str) -> str:
    """The stopping reason's note on J's eigenvalues with negative real part, "" when there are none
    (with some, the iterate is still outside the basin of a stable root)."""
    k = int(np.sum(eigenvalues.real < 0))
    if k == 0:
        return ""
    return (f"; ∂G/∂θ has {k} eigenvalue(s) with negative real part {where} (min "
            f"{float(np.min(eigenvalues.real)):.2e}): training's flow is still leaving a saddle region, "
            f"outside the basin of a stable root")


class _Progress:
    """solve_fixed_point's progress on stderr, reported after each Jacobian (the unit of its cost): the
    method, the Jacobians so far against the budget, ‖G‖ against tol, the time. At most one line per
    PROGRESS_EVERY seconds and none in the first, so a quick solve prints nothing; a method that printed
    closes with its stopping reason."""

    def __init__(self, enabled: bool, max_iter: int, tol: float) -> None:
        self.enabled, self.max_iter, self.tol = enabled, max_iter, tol
        self.started = self.last = time.perf_counter()
        self.method, self.offset, self.printed = "", 0, False

    def start(self, method: str, offset: int = 0) -> None:
        """A method begins; ``offset`` Jacobians of its budget are already spent (hybr's Newton polish)."""
        self.method, self.offset = method, offset
        if offset == 0:
            self.printed = False

    def __call__(self, jacobians: int, r: float) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last >= PROGRESS_EVERY:
            self._line(f"Jacobian {self.offset + jacobians}/{self.max_iter}, ‖G‖ = {r:.2e} "
                       f"(tol {self.tol:.0e})")
            self.last, self.printed = now, True

    def finish(self, method: str, jacobians: int, r: float, why: str) -> None:
        """A method ends (its polish included) with ``why``: said where it or its polish printed."""
        if self.enabled and self.printed:
            self.method = method
            self._line(f"{why}, ‖G‖ = {r:.2e} after {jacobians} Jacobians")

    def _line(self, message: str) -> None:
        print(f"  solve_fixed_point ({self.method}): {message}, {time.perf_counter() - self.started:.0f} s",
              file=sys.stderr, flush=True)


def _scipy_root(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
                weights: Array | None, method: str, max_iter: int,
                report: _Progress) -> tuple[Array, float, int, str]:
    """scipy.optimize.root with the hand Jacobian: 'hybr' (MINPACK Powell dogleg trust region) or 'lm'."""
    counter = {"jac": 0}
    best = {"r": float("inf")}  # the smallest ‖G‖ evaluated: ‖G‖ at MINPACK's current point, where it
    # takes J (hybr and lm accept only steps that lower ‖G‖), for the progress line

    def fun(t: Array) -> Array:
        try:
            G = residual(problem, sam, optimizer, t, weights)
        except ZeroGradientError:
            G = np.full(problem.d, 1e300)
        best["r"] = min(best["r"], float(np.linalg.norm(G)))
        return G

    last: dict[str, Array] = {}  # scipy calls jac(θ₀) once to check its shape, then MINPACK again

    def jac(t: Array) -> Array:
        if "t" in last and np.array_equal(last["t"], t):
            return last["J"]
        counter["jac"] += 1
        try:
            J = linearise(problem, sam, t, weights, optimizer=optimizer).jacobian
        except ZeroGradientError:
            J = np.eye(problem.d)
        last["t"], last["J"] = np.array(t, dtype=np.float64), J
        report(counter["jac"], best["r"])
        return J

    # The budget is max_iter evaluations of G (MINPACK's maxfev; "maxiter" is lm's name for it); MINPACK
    # evaluates the Jacobian at most once per evaluation of G, so it is also the Jacobian budget.
    options = {"maxfev": max_iter} if method == "hybr" else {"maxiter": max_iter}
    with np.errstate(over="ignore", invalid="ignore"):
        sol = scipy.optimize.root(fun, theta, jac=jac, method=method, options=options)
    theta_new = np.asarray(sol.x, dtype=np.float64)
    message = " ".join(str(sol.message).split())  # MINPACK messages contain line breaks
    return theta_new, _safe_norm(problem, sam, optimizer, theta_new, weights), counter["jac"], message


@reuse_derivatives()  # each Newton iterate: G and J at the same θ and ŵ
def solve_fixed_point(problem: Problem, sam: SAM, theta0: ArrayLike, *, optimizer: Optimizer | None = None,
                      tol: float = TOL_DEFAULT, max_iter: int = 100, method: str = "auto",
                      weights: ArrayLike | None = None, raise_on_failure: bool = True,
                      progress: bool | None = None) -> FixedPoint:
    """Find a root θ̂ of the full-batch SAM residual G(θ; w) near ``theta0`` and diagnose it.

    Parameters
    ----------
    problem : Problem
        Model, data, sample weights and the loss's L2 term.
    sam : SAM
        Rule and radius ρ.
    theta0 : array (d,)
        Warm start (e.g. the end of a SAM run). The root found is the one this start leads to.
    optimizer : Optimizer, optional
        The base optimizer of the training run (e.g. ``trajectory.optimizer()``): its weight decay is part
        of G; its η (the last of a schedule) and momentum give the stability diagnostic
        ``spectral_radius``. None: G without weight decay, no stability diagnostic.
    tol : float > 0
        The root is verified when ‖G(θ̂)‖₂ ≤ tol.
    max_iter : int >= 1
        The budget per method, honoured exactly: at most ``max_iter`` Jacobians of G, the Newton polish
        of hybr and lm included (which also stop after ``max_iter`` evaluations of G).
    method : {"auto", "ptc", "newton", "hybr", "lm"}
        "ptc": pseudo-transient continuation, shifted Newton steps (J + δI) s = −G that follow training's
        flow dθ/dt = −G in a trust radius around ``theta0``, δ kept above the flow's unstable rates so
        that no step walks into a saddle, each step corrected by GMRES on exact products of J where a
        lagged Jacobian is not enough (`_pseudo_transient`). "hybr": MINPACK's trust-region dogleg
        (scipy.optimize.root) with the hand Jacobian. "newton": damped Newton with backtracking on ‖G‖.
        "lm": Levenberg–Marquardt. "auto" tries ptc, hybr, newton, lm in that order, each from
        ``theta0``, and returns the first verified root —
        but when the optimizer gives a stability diagnostic and that root is unstable (spectral radius
        ≥ 1: training with step η cannot converge to it, e.g. a saddle) it tries the remaining methods
        for a stable root first. Trust-region results are polished with full Newton steps.
    weights : array (n,), optional
        Sample weights overriding ``problem.weights`` (used by the re-solving ground truth).
    raise_on_failure : bool
        If False, return the best point with ``converged=False`` instead of raising.
    progress : bool or None
        Print progress to stderr after each Jacobian (method, Jacobians so far, ‖G‖, time), at most one
        line per PROGRESS_EVERY = 1 s and none in the first second, and each method's stopping reason
        where it printed (None: where stderr is a terminal).

    Returns
    -------
    FixedPoint

    Raises
    ------
    NoFixedPointError
        Up front, without iterating, when G provably has no root (`no_root_reason()`).
    FixedPointError
        When no method reaches ‖G‖ ≤ tol; ``.residual`` and ``.reason`` say how close and why (for
        "ptc": how many eigenvalues of ∂G/∂θ have negative real part where it stopped, i.e. whether
        the iterate was still outside the basin of a stable root).

    ``FixedPoint.iterations`` counts Jacobian evaluations (all methods tried), ``FixedPoint.reason``
    each method's stopping reason. Cost: per iteration two Hessians and an O(d³) solve ("ptc": a Schur
    decomposition, and Hessian-vector products in its Krylov corrections); then one LU and the
    spectral radius.
    """
    theta0, weights = check_root_inputs(problem, sam, theta0, "theta0", weights, optimizer)
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    method = check_choice("method", method, SOLVER_METHODS)
    report = _Progress(check_progress(progress), max_iter, tol)
    reason = no_root_reason(problem, sam, optimizer)
    if reason is not None:
        raise NoFixedPointError(reason, residual=_safe_norm(problem, sam, optimizer, theta0, weights),
                                reason="no fixed point exists", theta=None)

    methods = ("ptc", "hybr", "newton", "lm") if method == "auto" else (method,)
    best = (theta0, _safe_norm(problem, sam, optimizer, theta0, weights))
    reasons: list[str] = []
    total_iterations = 0
    first_root = None  # with `lr`, "auto" keeps looking past an unstable root for a stable one
    for name in methods:
        report.start(name)
        if name == "ptc":
            theta, r, its, why = _pseudo_transient(problem, sam, optimizer, theta0, weights, tol, max_iter,
                                                   report)
        elif name == "newton":
            theta, r, its, why = _damped_newton(problem, sam, optimizer, theta0, weights, tol, max_iter,
                                                report)
        else:
            theta, r, its, why = _scipy_root(problem, sam, optimizer, theta0, weights, name, max_iter, report)
            if np.isfinite(r) and its < max_iter:  # polish within the same budget: MINPACK stops near
                # 1e-12 relative, Newton finishes the job
                report.start(f"{name}, Newton polish", its)
                theta, r, more, polish_why = _damped_newton(problem, sam, optimizer, theta, weights, tol,
                                                            max_iter - its, report)
                its += more
                why = f"{why}; Newton polish: {polish_why}"
        total_iterations += its
        if r < best[1]:
            best = (theta, r)
        if r <= tol:
            root = _make_fixed_point(problem, sam, optimizer, theta, weights, total_iterations, name, tol,
                                     theta0, "; ".join([*reasons, f"{name}: converged"]))
            if root.stable is not False:
                report.finish(name, its, r, "converged")
                return root
            first_root = first_root or root
            why = f"root with spectral radius {root.spectral_radius:.4f} >= 1"
        reasons.append(f"{name}: {why}")
        report.finish(name, its, r, why)
    if first_root is not None:  # only unstable roots: report the first (its diagnostics say so)
        return first_root

    theta, r = best
    message = (f"no root of G with ‖G‖ <= tol={tol:.1e} found from `theta0` (best ‖G‖ = {r:.3e}). "
               + "; ".join(reasons)
               + ". Try a better warm start (train longer first), a larger weight decay, or a smaller rho.")
    if raise_on_failure:
        raise FixedPointError(message, residual=r, reason="; ".join(reasons), theta=theta)
    if not np.isfinite(r):
        raise FixedPointError(message, residual=r, reason="G undefined", theta=None)
    return _make_fixed_point(problem, sam, optimizer, theta, weights, total_iterations, "failed", tol, theta0,
                             "; ".join(reasons))
