"""Ground truth for the closed form: re-solve the root with changed sample weights.

Conventions
-----------
* θ̂(w) is the root of G(θ; w) (`refsam.influence.fixed_point`) that Newton reaches from a warm start at
  the reference root θ̂ = θ̂(w⁰), w⁰ = ``problem.weights`` (all ones by default).
  It shares nothing with the closed form but G itself: no ∂G/∂θ formula enters the answer.
* Central finite differences, for each j in ``indices``:
      I_j(f) ≈ [ f(θ̂(w⁰ + h e_j)) − f(θ̂(w⁰ − h e_j)) ] / (2h)          error O(h²) + O(δ/h)
  (δ = the re-solved roots' residual error, ~1e-16); where w⁰_j < h, the second-order one-sided
  stencil on w⁰_j, w⁰_j + h, w⁰_j + 2h (`stencil`). h below 1e-10 or w⁰_j's resolution is
  refused. This is an independent oracle for the closed form: it uses only G, never ∂G/∂θ's formula
  except inside Newton, whose answer does not depend on it.
* Leave-one-out: Δf_j = f(θ̂(w⁰ − w⁰_j e_j)) − f(θ̂), the actual change of f when j is removed; the
  closed form predicts it to first order as −I_j(f).
* Test functions f are the per-sample test losses ℓ(z_k^test, θ): results have shape (len(indices), m).
Cost: two (finite differences) or one (leave-one-out) re-solved roots per index; the weight vectors of
each chunk of up to 64 indices are re-solved together (`resolve_block()`: chord steps on (d, K)
blocks, Newton alone for a vector the chord leaves unfinished); the chunks run serially, on a caller's
``executor`` or on ``n_jobs`` processes (`parallel`).
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from ..influence.fixed_point import FixedPoint, solve_fixed_point
from ..influence.linearisation import Factorised, check_root_inputs, factorise, residual_jacobian
from ..objective import Problem
from ..sam import SAM
from ..tolerances import FD_STEP, RESOLVE_TOL
from ..training import Optimizer, residual
from ..validation import check_indices, check_progress
from .parallel import check_parallel, map_rows
from .stencil import check_step, weight_stencil

__all__ = ["H_DEFAULT", "finite_difference_influence", "finite_difference_parameters", "leave_one_out"]

H_DEFAULT = FD_STEP  # central differences (refsam.tolerances)

Array = NDArray[np.float64]


def _reference(problem: Problem, sam: SAM, theta_hat: Any, optimizer: Optimizer | None, X_test: Any,
               y_test: Any) -> tuple[Array, Optimizer | None, Factorised, Any, Any]:
    """Validate once, polish θ̂ to a root at the problem's weights (warm start, tight tolerance) and
    factor J̄ = ∂G/∂θ there: the one LU every block of re-solves uses (`resolve_block()`). The
    optimizer (whose weight decay is part of G) is ``optimizer``, else the FixedPoint's."""
    if isinstance(theta_hat, FixedPoint):
        optimizer = theta_hat.optimizer if optimizer is None else optimizer
        theta_hat = theta_hat.theta
    theta_hat, _ = check_root_inputs(problem, sam, theta_hat, "theta_hat", optimizer=optimizer)
    if X_test is not None:
        X_test, y_test = problem.check_test(X_test, y_test)
    root = solve_fixed_point(problem, sam, theta_hat, optimizer=optimizer, tol=RESOLVE_TOL,
                             progress=False).theta
    return root, optimizer, root_factors(problem, sam, optimizer, root), X_test, y_test


def _resolve(problem: Problem, sam: SAM, optimizer: Optimizer | None, weights: Array, theta_start: Array,
             j: int) -> Array:
    """θ̂(weights), warm-started at θ̂; the error names the training point whose re-solve failed."""
    try:
        return solve_fixed_point(problem, sam, theta_start, optimizer=optimizer, tol=RESOLVE_TOL,
                                 weights=weights, progress=False).theta
    except Exception as exc:
        exc.args = (f"re-solving the root with w_{j} = {weights[j]:g} failed: {exc}",) + exc.args[1:]
        raise


def finite_difference_parameters(problem: Problem, sam: SAM, theta_hat: ArrayLike | FixedPoint,
                                 indices: ArrayLike | None = None, h: float = H_DEFAULT, *,
                                 executor: Executor | None = None, n_jobs: int = 1,
                                 optimizer: Optimizer | None = None, progress: bool | None = None) -> Array:
    """[θ̂(w⁰ + h e_j) − θ̂(w⁰ − h e_j)] / (2h) ≈ dθ̂/dw_j, shape (len(indices), d).

    ``executor`` / ``n_jobs``: the per-point loop on a concurrent.futures executor or a process pool
    (`parallel`), bit for bit the serial result. ``optimizer``: the run's (its weight decay is part of
    G); default the FixedPoint's, or none. ``progress``: a line on stderr per chunk of points; None (the
    default) means on where stderr is a terminal.
    """
    progress = check_progress(progress)
    root, optimizer, factors, _, _ = _reference(problem, sam, theta_hat, optimizer, None, None)
    idx = check_indices("indices", indices, problem.n)
    h = check_step(h)
    executor, n_jobs = check_parallel(executor, n_jobs)
    return map_rows(_rows, ("parameters", problem, sam, optimizer, root, factors, None, None, h), idx,
                    problem.d,
                    executor, n_jobs, "finite differences: re-solved", progress)


def finite_difference_influence(problem: Problem, sam: SAM, theta_hat: ArrayLike | FixedPoint,
                                X_test: ArrayLike, y_test: ArrayLike, indices: ArrayLike | None = None,
                                h: float = H_DEFAULT, *, executor: Executor | None = None,
                                n_jobs: int = 1, optimizer: Optimizer | None = None,
                                progress: bool | None = None) -> Array:
    """Central differences of the re-solved root's test losses, ≈ I_j(test loss k), shape (len(indices), m).

    entry [r, k] = [ℓ_k^test(θ̂(w⁰ + h e_j)) − ℓ_k^test(θ̂(w⁰ − h e_j))] / (2h),  j = indices[r].
    ``theta_hat`` (array (d,) or FixedPoint) is first polished to a root; ``indices=None`` means all n.
    ``executor`` / ``n_jobs`` / ``optimizer`` / ``progress`` as in `finite_difference_parameters()`.
    """
    progress = check_progress(progress)
    root, optimizer, factors, X_arr, y_arr = _reference(problem, sam, theta_hat, optimizer, X_test, y_test)
    idx = check_indices("indices", indices, problem.n)
    h = check_step(h)
    executor, n_jobs = check_parallel(executor, n_jobs)
    return map_rows(_rows, ("influence", problem, sam, optimizer, root, factors, X_arr, y_arr, h), idx,
                    X_arr.shape[0],
                    executor, n_jobs, "finite differences: re-solved", progress)


def leave_one_out(problem: Problem, sam: SAM, theta_hat: ArrayLike | FixedPoint, X_test: ArrayLike,
                  y_test: ArrayLike, indices: ArrayLike | None = None, *, executor: Executor | None = None,
                  n_jobs: int = 1, optimizer: Optimizer | None = None, progress: bool | None = None) -> Array:
    """Actual change of each test loss when training point j is removed (w_j = 0), re-solving the root.

    entry [r, k] = ℓ_k^test(θ̂(w⁰ with w_j = 0)) − ℓ_k^test(θ̂),  j = indices[r];  shape (len(indices), m).
    Compare with the closed-form prediction −I_j(test loss k). ``theta_hat`` (array (d,) or
    FixedPoint) is first polished to a root; every re-solve is warm-started there. ``executor`` /
    ``n_jobs`` / ``optimizer`` / ``progress`` as in `finite_difference_parameters()`.
    """
    progress = check_progress(progress)
    root, optimizer, factors, X_arr, y_arr = _reference(problem, sam, theta_hat, optimizer, X_test, y_test)
    idx = check_indices("indices", indices, problem.n)
    executor, n_jobs = check_parallel(executor, n_jobs)
    return map_rows(_rows, ("removal", problem, sam, optimizer, root, factors, X_arr, y_arr, 0.0), idx,
                    X_arr.shape[0],
                    executor, n_jobs, "leave-one-out: re-solved", progress)


def _rows(kind: str, problem: Problem, sam: SAM, optimizer: Optimizer | None, root: Array,
          factors: Factorised, X_test: Any, y_test: Any, h: float, chunk: NDArray[np.int64]) -> Array:
    """One task of `map_rows()`: the rows of ``chunk`` for ``kind`` in {"parameters" (dθ̂/dw_j),
    "influence" (dℓ^test/dw_j), "removal" (Δℓ^test when w_j = 0)}. Every weight vector of the chunk is
    re-solved together (`resolve_block()`)."""
    js = [int(j) for j in chunk]
    if kind == "removal":
        weights = np.repeat(problem.weights[None, :], len(js), axis=0)
        weights[np.arange(len(js)), js] = 0.0
        roots = resolve_block(problem, sam, optimizer, root, weights, js, factors)
        base = problem.model.losses(root, X_test, y_test)
        return np.array([problem.model.losses(r, X_test, y_test) - base for r in roots])
    stencils = [weight_stencil(problem.weights, j, h) for j in js]
    vectors = np.array([w for stencil, _ in stencils for w in stencil])
    owners = [j for j, (stencil, _) in zip(js, stencils) for _ in stencil]
    roots = resolve_block(problem, sam, optimizer, root, vectors, owners, factors)
    rows, start = [], 0
    for stencil, coefficients in stencils:
        block = roots[start:start + len(stencil)]
        start += len(stencil)
        values = block if kind == "parameters" else [problem.model.losses(r, X_test, y_test) for r in block]
        rows.append(coefficients @ np.array(values))
    return np.array(rows)


CHORD_MAX_STEPS = 60  # chord steps before a weight vector falls back to its own Newton solve
CHORD_STALL = 0.5  # a step that shrinks ‖G‖ by less than this factor has reached the rounding floor


def root_factors(problem: Problem, sam: SAM, optimizer: Optimizer | None, root: Array) -> Factorised:
    """LU of J̄ = ∂G/∂θ at the reference root, with the closed form's singular rule
    (`factorise()`)."""
    return factorise(residual_jacobian(problem, sam, root, optimizer=optimizer))


def resolve_block(problem: Problem, sam: SAM, optimizer: Optimizer | None, root: Array, weights: Array,
                  owners: list[int], factors: Factorised | None = None) -> Array:
    """θ̂(w) for every row w of ``weights`` (K, n), near the reference root θ̂ (rows (K, d)).

    The chord method in one block: Θ ← Θ − J̄⁻¹ G(Θ; W) for all K columns at once, with the one LU of
    J̄ = ∂G/∂θ at θ̂ and the block residual G (`refsam.training.residual()` on (d, K) blocks:
    two matrix products per evaluation for the linear models). A re-solve moves θ̂ by O(‖w − w⁰‖/n), so
    J̄ is close to every column's own Jacobian and each step shrinks the error by about that factor:
    finite differences take about 3 steps, leave-one-out about 10 (18–29 for a chunk holding the point
    whose removal moves the root most: 0.13–0.3 per step at n = 1000, d = 50). A column stops when
    ‖G‖ ≤ RESOLVE_TOL and its last step no longer halved ‖G‖ (the rounding floor, so where a column
    stops does not depend on its block: the answer equals a lone re-solve's to rounding). A column the
    chord does not bring below RESOLVE_TOL within CHORD_MAX_STEPS (a far root, a growing residual), or
    every column when J̄ is singular, is re-solved alone by `solve_fixed_point()` (Newton), whose
    failure names the training point (``owners``).
    ``factors``: `root_factors()` at ``root`` (None: computed here). Trusts its inputs (the public
    functions above validate them).
    """
    K = weights.shape[0]
    W = np.ascontiguousarray(weights.T)  # (n, K)
    if factors is None:  # the public functions factor J̄ once per call, not once per chunk
        factors = root_factors(problem, sam, optimizer, root)
    # scipy's getrs wrapper shifts the pivots to 1-based and back *in place*: threads sharing one LU
    # (a ThreadPoolExecutor over the chunks) would solve with each other's shifted pivots. Own copy.
    lu = (factors.lu[0], factors.lu[1].copy())
    theta = np.repeat(root[:, None], K, axis=1)  # (d, K)
    active = np.arange(K)
    previous = np.full(K, np.inf)
    for _ in range(0 if factors.singular else CHORD_MAX_STEPS):  # a singular J̄: every column to Newton
        G = residual(problem, sam, optimizer, theta[:, active], W[:, active])
        norms = np.sqrt(np.einsum("ij,ij->j", G, G))
        bad = ~np.isfinite(norms)
        done = (norms <= RESOLVE_TOL) & (norms >= CHORD_STALL * previous[active])
        previous[active] = norms
        keep = ~(done | bad)
        if np.any(bad):
            previous[active[bad]] = np.inf  # left to Newton below
        active, G = active[keep], G[:, keep]
        if active.size == 0:
            break
        theta[:, active] -= scipy.linalg.lu_solve(lu, G)
    for k in range(K):  # not below RESOLVE_TOL by the chord: Newton, alone
        if not previous[k] <= RESOLVE_TOL:
            theta[:, k] = _resolve(problem, sam, optimizer, weights[k], root, owners[k])
    return np.ascontiguousarray(theta.T)
