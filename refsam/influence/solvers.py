"""Solvers for the closed form's system Jᵀ V = B (one column per test function), each reporting its cost.

Conventions
-----------
* ``op`` is a LinearOperator for Jᵀ (`refsam.influence.operators.SystemOperators`), ``B`` the test
  gradients (d, m). A solver returns V (d, m) and a `SolveInfo`. Cost is counted in curvature
  products (Hessian-vector products for the exact curvature): a "full" SAM Jᵀv costs two.
* Solvers (``solver=``; options are keyword arguments, SciPy's names where SciPy has them):

      "direct"    LU of the dense J (the default; no options)
      "gmres"     scipy.sparse.linalg.gmres per column:     rtol=1e-10, atol=0.0, maxiter=None, restart=None
      "bicgstab"  scipy.sparse.linalg.bicgstab per column:  rtol=1e-10, atol=0.0, maxiter=None
      "cg"        scipy.sparse.linalg.cg per column:        rtol=1e-10, atol=0.0, maxiter=None.
                  Only for a symmetric J (the "frozen" and "erm" variants, or ρ = 0): SAM's J =
                  K(ŵ)(I + E) + λI is not symmetric, and CG on it is refused.
      "lissa"     the series of Koh & Liang's influence code, all columns at once:
                      h_0 = b,  h_{k+1} = b + (1 − damping) h_k − Jᵀ h_k / scale,   v ≈ h_depth / scale
                  options depth=1000, scale=10.0, damping=0.0, repetitions=1, batch_size=None, seed=0.
                  Its fixed point is (Jᵀ + damping·scale·I)⁻¹ b: exact for damping = 0. The series
                  converges iff the spectral radius r of M = (1 − damping) I − Jᵀ/scale is below 1
                  (for every eigenvalue μ of J, |1 − damping − μ/scale| < 1: a J with an eigenvalue of
                  negative real part needs damping); then the error after k terms is O(r^k). refsam
                  computes r (ARPACK on M, or all eigenvalues for d ≤ 256; not counted as cost), puts
                  it in the info and warns when r ≥ 1. With ``batch_size`` each term uses curvatures of
                  random minibatches (independent draws at ŵ and θ̂, so that the product of the two is
                  unbiased), and the repetitions are averaged, as in the original code.
      "arnoldi"   low rank (Schioppa et al. 2022): the dominant invariant subspace of Jᵀ, an orthonormal
                  Q (d, ≥ rank) from ARPACK's ``rank`` largest-modulus eigenvectors (real and imaginary
                  parts), and v ≈ Q (Qᵀ Jᵀ Q)⁻¹ Qᵀ b. For a symmetric J this is Σ_i u_i u_iᵀ b / μ_i over
                  the top eigenpairs. Options rank (required), tol=0.0 (ARPACK's), seed=0. rank ≥ d − 1
                  uses all eigenvectors (dense), so rank = d is exact.
* ``SolveInfo.residual`` = max_k ‖Jᵀ v_k − b_k‖ / ‖b_k‖ with the system's own products, evaluated by
  refsam after the solve (not counted in ``products``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla
from numpy.typing import NDArray

from ..errors import DivergenceError, InvalidInputError
from ..validation import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_random_state,
)

__all__ = ["SOLVERS", "SOLVER_OPTIONS", "SolveInfo", "SolverConvergenceWarning", "check_cg_symmetric",
           "check_solver_options", "relative_residual", "solve_iteratively"]

Array = NDArray[np.float64]

SOLVERS = ("direct", "gmres", "bicgstab", "cg", "lissa", "arnoldi")
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "direct": {},
    "gmres": {"rtol": 1e-10, "atol": 0.0, "maxiter": None, "restart": None},
    "bicgstab": {"rtol": 1e-10, "atol": 0.0, "maxiter": None},
    "cg": {"rtol": 1e-10, "atol": 0.0, "maxiter": None},
    "lissa": {"depth": 1000, "scale": 10.0, "damping": 0.0, "repetitions": 1, "batch_size": None, "seed": 0},
    "arnoldi": {"rank": None, "tol": 0.0, "seed": 0},
}
LISSA_DENSE_MAX = 256  # LiSSA's convergence check takes all eigenvalues up to this d, ARPACK above


class SolverConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped before its tolerance, or LiSSA's series does not converge."""


@dataclass(frozen=True)
class SolveInfo:
    """What one solve cost and how well it solved Jᵀ V = B.

    solver, curvature: the choices; products: curvature products (HVPs for the exact curvature) the
    solver used — for "direct", the d columns of each dense curvature it formed; iterations: summed over
    the test functions; residual: max_k ‖Jᵀv_k − b_k‖/‖b_k‖; converged: every column reached the
    solver's tolerance (LiSSA: its series converges); seconds: wall time of the solve; spectral_radius:
    LiSSA's r (else None); rank: the Arnoldi subspace's dimension (else None).
    """

    solver: str
    curvature: str
    products: int
    iterations: int
    residual: float
    converged: bool
    seconds: float
    spectral_radius: float | None = None
    rank: int | None = None


def check_cg_symmetric(solver: str, symmetric: bool) -> None:
    """Refuse CG on a system that is not symmetric (`linearisation.symmetric_jacobian`)."""
    if solver == "cg" and not symmetric:
        raise InvalidInputError(
            "solver='cg' needs a symmetric system, and J is not symmetric here: SAM's J = K(ŵ)(I + E) + λI "
            "for rho > 0 (variant='full'), and every variant at an AdamW root (J = D (H + λ_in) + λ with "
            "AdamW's diagonal D): use solver='gmres' or 'bicgstab', or cg with variant='frozen' or 'erm' "
            "under SGD or Adam")


def check_solver_options(solver: object, options: dict[str, Any],
                         symmetric: bool) -> tuple[str, dict[str, Any]]:
    """(solver, options with defaults filled in); unknown or invalid options are refused."""
    solver = check_choice("solver", solver, SOLVERS)
    allowed = SOLVER_OPTIONS[solver]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidInputError(f"solver={solver!r} takes the options {sorted(allowed) or 'none'}; got "
                                f"{', '.join(unknown)}")
    check_cg_symmetric(solver, symmetric)
    merged = {**allowed, **options}
    for key in ("rtol", "atol", "damping", "tol"):
        if key in merged:
            merged[key] = check_nonnegative(key, merged[key])
    if "rtol" in merged and merged["rtol"] == 0.0 and merged["atol"] == 0.0:
        raise InvalidInputError("`rtol` and `atol` cannot both be 0: the solver could never stop")
    for key in ("maxiter", "restart", "depth", "repetitions", "batch_size"):
        if merged.get(key) is not None:
            merged[key] = check_positive_int(key, merged[key])
    if "scale" in merged:
        merged["scale"] = check_positive("scale", merged["scale"])
    if solver == "arnoldi":
        if merged["rank"] is None:
            raise InvalidInputError("solver='arnoldi' needs `rank`, the dimension of its subspace")
        merged["rank"] = check_positive_int("rank", merged["rank"])
    return solver, merged


def relative_residual(op: spla.LinearOperator, V: Array, B: Array) -> float:
    """max_k ‖op v_k − b_k‖ / ‖b_k‖ (‖b_k‖ = 0: the absolute residual)."""
    R = op.matmat(V) - B
    scale = np.linalg.norm(B, axis=0)
    return float(np.max(np.linalg.norm(R, axis=0) / np.where(scale > 0, scale, 1.0), initial=0.0))


def solve_iteratively(op: spla.LinearOperator, B: Array, solver: str, options: dict[str, Any],
                      count: list[int], stochastic: Any = None) -> tuple[Array, int, bool, dict[str, Any]]:
    """V (d, m) with op V ≈ B by the iterative ``solver``: (V, iterations, converged, extras).

    ``count`` is the operator's product counter (read, not reset). ``stochastic(rng)`` returns a
    minibatch operator for LiSSA's ``batch_size``.
    """
    if solver in ("gmres", "bicgstab", "cg"):
        return _krylov(op, B, solver, options)
    if solver == "lissa":
        return _lissa(op, B, options, stochastic, count)
    return _arnoldi(op, B, options)


def _krylov(op: spla.LinearOperator, B: Array, solver: str, options: dict[str, Any]
            ) -> tuple[Array, int, bool, dict[str, Any]]:
    method = {"gmres": spla.gmres, "bicgstab": spla.bicgstab, "cg": spla.cg}[solver]
    kwargs: dict[str, Any] = {"rtol": options["rtol"], "atol": options["atol"], "maxiter": options["maxiter"]}
    if solver == "gmres":
        kwargs["restart"] = options["restart"]
        kwargs["callback_type"] = "pr_norm"
    iterations, converged = [0], True
    V = np.zeros_like(B)

    def callback(_: Any) -> None:
        iterations[0] += 1

    for k in range(B.shape[1]):
        if not np.any(B[:, k]):
            continue  # a zero test gradient: v = 0 exactly
        V[:, k], info = method(op, B[:, k], callback=callback, **kwargs)
        converged = converged and info == 0
    return V, iterations[0], converged, {}


def _lissa(op: spla.LinearOperator, B: Array, options: dict[str, Any], stochastic: Any, count: list[int]
           ) -> tuple[Array, int, bool, dict[str, Any]]:
    depth, scale, damping = options["depth"], options["scale"], options["damping"]
    before = count[0]
    radius = _lissa_radius(op, scale, damping)
    count[0] = before  # refsam's check of the condition is not the method's cost
    converged = radius < 1.0
    if not converged:
        warnings.warn(
            f"LiSSA's series diverges here: the spectral radius of (1 - damping) I - J^T/scale is "
            f"{radius:.3g} >= 1 (scale={scale:g}, damping={damping:g}). It converges when every eigenvalue "
            f"mu of J has |1 - damping - mu/scale| < 1: raise `scale` above the largest |mu|, and add "
            f"`damping` if J has eigenvalues with negative real part.", SolverConvergenceWarning,
            stacklevel=4)
    rng = check_random_state(options["seed"])
    total = np.zeros_like(B)
    for _ in range(options["repetitions"]):
        h = B.copy()
        for _ in range(depth):
            step_op = op if stochastic is None else stochastic(rng)
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging series is reported below
                h = B + (1.0 - damping) * h - step_op.matmat(h) / scale
            if not np.all(np.isfinite(h)):
                raise DivergenceError(
                    f"LiSSA's series overflowed (spectral radius {radius:.3g} of (1 - damping) I - "
                    f"J^T/scale): raise `scale` or `damping`")
        total += h / scale
    iterations = depth * options["repetitions"]
    return total / options["repetitions"], iterations, converged, {"spectral_radius": radius}


def _lissa_radius(op: spla.LinearOperator, scale: float, damping: float) -> float:
    """Spectral radius of M = (1 − damping) I − Jᵀ/scale (dense for small d, else ARPACK on M)."""
    d = op.shape[0]
    if d <= LISSA_DENSE_MAX:
        M = (1.0 - damping) * np.eye(d) - op.matmat(np.eye(d)) / scale
        return float(np.max(np.abs(np.linalg.eigvals(M))))
    M_op = spla.LinearOperator((d, d), matvec=lambda v: (1.0 - damping) * v - op.matvec(v) / scale,
                               dtype=np.float64)
    try:
        value = spla.eigs(M_op, k=1, which="LM", return_eigenvectors=False, v0=np.ones(d),
                          maxiter=20 * d, tol=1e-8)
    except spla.ArpackNoConvergence as error:  # pragma: no cover - ARPACK's rare failure
        value = error.eigenvalues if len(error.eigenvalues) else np.array([np.inf])
    return float(np.max(np.abs(value)))


def _arnoldi(op: spla.LinearOperator, B: Array, options: dict[str, Any]
             ) -> tuple[Array, int, bool, dict[str, Any]]:
    d, rank = op.shape[0], options["rank"]
    if rank > d:
        raise InvalidInputError(f"`rank` must be at most d = {d}, got {rank}")
    if rank >= d - 1:  # ARPACK needs rank < d − 1: take every eigenvector (d products)
        vectors = scipy.linalg.eig(op.matmat(np.eye(d)))[1]
    else:
        v0 = check_random_state(options["seed"]).standard_normal(d)
        try:
            _, vectors = spla.eigs(op, k=rank, which="LM", v0=v0, tol=options["tol"], maxiter=50 * d)
        except spla.ArpackNoConvergence as error:  # keep what converged, and say so
            vectors = error.eigenvectors
            warnings.warn(f"ARPACK found {vectors.shape[1]} of the rank={rank} eigenvectors within its "
                          f"budget: the Arnoldi subspace is smaller than asked", SolverConvergenceWarning,
                          stacklevel=4)
            if vectors.shape[1] == 0:  # nothing converged: the dense eigenvectors of largest modulus
                values, dense = scipy.linalg.eig(op.matmat(np.eye(d)))
                vectors = dense[:, np.argsort(-np.abs(values), kind="stable")[:rank]]
    Q = scipy.linalg.orth(np.hstack([vectors.real, vectors.imag]))  # real basis of the subspace
    T = Q.T @ op.matmat(Q)  # Qᵀ Jᵀ Q, (r, r)
    V = Q @ scipy.linalg.solve(T, Q.T @ B)
    return V, 1, True, {"rank": int(Q.shape[1])}
