"""A trained model with everything the influence methods need (`Fit`), and influence by method name.

Conventions
-----------
* Influence: ``I_j(f) = ∂ f(θ_final(w)) / ∂ w_j`` at w = 1, so removing point j changes f by about
  ``−I_j(f)``. Every method returns this quantity, shape (n_train, n_test) for the per-sample test losses
  ``f = ℓ(z_test, ·)`` (docs/contract.md).
* Methods (`METHODS`, rows of the method table `refsam.influence.methods`):
    ``closed_form``         closed form at the SAM fixed point θ̂ (implicit function theorem; exact at a root)
    ``closed_form_frozen``  Koh–Liang at ŵ = θ̂ + ε̂ with ε̂ held constant (ablation)
    ``closed_form_erm``     Koh–Liang at θ̂, SAM ignored (ablation)
    ``trajectory``          exact derivative of the recorded run (adjoint recursion)
    ``first_order``         step Jacobians A_t ≈ I and the SAM inner term dropped:
                            −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(θ_T)
    ``tracin``              TracIn, test gradient at the same checkpoint: −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(ŵ_t)
    ``first_order_unperturbed``, ``tracin_unperturbed``: the same with θ_t in place of ŵ_t
  0.1's spellings ("sam-full", "sam-frozen", "erm", "first-order", …) are still accepted.
* Closed-form methods need a full-batch, decoupled run whose end point is refined to a root of
  G(θ) = ∇F(θ + ε(θ)) + λθ; `Fit` records the residual and spectral radius so the report can say
  when the closed form is only an approximation (docs/validity.md).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..influence import FixedPoint, FixedPointError, hessian_influence, self_influence, solve_fixed_point
from ..influence.methods import APPLICATION_METHODS, CLOSED_FORM, TRAJECTORY, MethodInfo, method_info
from ..influence.trajectory import trajectory_influence, trajectory_self_influence
from ..objective import Problem
from ..sam import SAM
from ..training import Optimizer, Trajectory, train
from ..validation import check_progress

__all__ = [
    "CLOSED_FORM_METHODS",
    "METHODS",
    "RUN_METHODS",
    "Fit",
    "check_fit",
    "divergence",
    "fit",
    "influence",
    "progress_line",
    "resolve_method",
    "fit_self_influence",
]

METHODS = APPLICATION_METHODS
CLOSED_FORM_METHODS = tuple(m for m in METHODS if method_info(m).family == CLOSED_FORM)
RUN_METHODS = tuple(m for m in METHODS if method_info(m).family == TRAJECTORY)  # through the recorded run

Array = NDArray[np.float64]


def progress_line(message: str, enabled: bool) -> None:
    """One progress line on stderr (the applications' long loops report through this)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


# -- a trained model with everything the methods need ------------------------------------------------

@dataclass
class Fit:
    """A SAM training run and, where it exists, the SAM fixed point it converged to.

    Attributes
    ----------
    problem, sam, trajectory :
        The training problem, the perturbation rule and the recorded run.
    fixed_point :
        The result of ``solve_fixed_point`` started at θ_T (``.theta .residual .converged
        .spectral_radius``), or None when the closed form does not apply (minibatches; no root exists,
        e.g. coupled mode or λ = 0 on a convex model).
    fixed_point_note : str
        Why ``fixed_point`` is None, or "" .
    train_time : float
        Seconds spent training (and solving for the root).
    """

    problem: Problem
    sam: SAM
    trajectory: Trajectory
    fixed_point: FixedPoint | None = None
    fixed_point_note: str = ""
    train_time: float = 0.0
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def theta_final(self) -> np.ndarray:
        """θ_T, the end of the recorded run, shape (d,)."""
        return self.trajectory.theta_final

    @property
    def theta_hat(self) -> np.ndarray:
        """θ̂: the refined root when there is one, else θ_T."""
        return self.theta_final if self.fixed_point is None else np.asarray(self.fixed_point.theta)

    @property
    def optimizer(self) -> Optimizer:
        """The run's base optimizer."""
        return self.trajectory.optimizer()

    @property
    def has_root(self) -> bool:
        """True iff ``fixed_point`` is a verified root (tolerances.ROOT_TOL): only then do the closed-form
        methods apply."""
        return self.fixed_point is not None and self.fixed_point.converged

    def available_methods(self) -> tuple[str, ...]:
        """The methods that apply to this run (closed-form ones need a verified fixed point)."""
        return METHODS if self.has_root else RUN_METHODS


def fit(problem: Problem, sam: SAM, optimizer: Optimizer, steps: int = 300, batch_size: int | None = None,
        seed: object = 0, solve_root: bool = True, progress: bool | None = None) -> Fit:
    """Train with SAM (`refsam.train()`) and, for full-batch runs, refine θ_T to the SAM fixed point
    with ``solve_fixed_point`` so the closed-form methods apply. If no root exists (provably, e.g. no
    optimizer weight decay on a convex model) ``fixed_point`` is None; if the solver does not reach one,
    ``fixed_point`` is its best point with ``converged=False`` and the closed-form methods are refused
    (`Fit.has_root`). The optimizer's η (its last, for a schedule) and momentum judge the root's
    stability.

    Cost: ``steps`` SAM steps plus a root solve (a few d×d factorizations).
    """
    progress = check_progress(progress)
    start = time.perf_counter()
    trajectory = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=seed, progress=progress)
    fixed_point, note = None, ""
    if not solve_root:
        note = "root solve skipped"
    elif batch_size is not None and batch_size < problem.n:
        note = "minibatch run: no fixed point of the full-batch map is targeted"
    else:
        try:
            fixed_point = solve_fixed_point(problem, sam, trajectory.theta_final,
                                            optimizer=trajectory.optimizer(), raise_on_failure=False,
                                            progress=progress)
            if not fixed_point.converged:
                note = (f"the root solver found no verified root (best ‖G‖ = {fixed_point.residual:.3e} > "
                        f"{fixed_point.tol:.0e})")
        except FixedPointError as exc:  # no root exists (or G undefined): only trajectory methods apply
            note = str(exc).split(":")[0]  # the claim, without the proof that follows it
    return Fit(problem, sam, trajectory, fixed_point, note, time.perf_counter() - start)


DIVERGED_RISE = 0.1  # a run whose F + r ends more than 10% above where it started has diverged


def divergence(problem: Problem, trajectory: Trajectory) -> str | None:
    """Why the run diverged, or None: the training objective F + r rose over the run,

        F(θ_T) + r(θ_T) > (1 + DIVERGED_RISE) · (F(θ_0) + r(θ_0)),

    which a run that descends never does (a step size too large for the curvature oscillates and
    grows instead). Finite iterates only: a run that overflows raises DivergenceError in training.
    """
    start, end = (float(problem.objective(t) + problem.regularizer(t))
                  for t in (trajectory.thetas[0], trajectory.theta_final))
    if np.isfinite(end) and end <= (1.0 + DIVERGED_RISE) * start:
        return None
    return (f"the run diverged: the training objective rose from {start:.4g} at θ_0 to {end:.4g} at "
            f"θ_T")


# -- influence by method -------------------------------------------------------------------------------

def check_fit(fit_: object) -> None:
    """Raise InvalidInputError unless ``fit_`` is a `Fit` (what `fit()` returns)."""
    if not isinstance(fit_, Fit):
        raise InvalidInputError(
            f"`fit_` must be a refsam.apps.Fit (from refsam.apps.fit(problem, sam, ...)), "
            f"got {type(fit_).__name__}")


def resolve_method(method: object) -> MethodInfo:
    """The method-table row of one of `METHODS` (0.1 spellings such as "sam-full" accepted)."""
    return method_info(method, METHODS)


def influence(fit_: Fit, method: str, X_test: ArrayLike, y_test: ArrayLike,
              progress: bool | None = None) -> Array:
    """I_j(ℓ(z_test_k, ·)) for every training point j and test point k, shape (n_train, n_test).

    ``method`` is one of `METHODS` (the method table, `refsam.influence.methods`).
    Closed-form methods use θ̂, trajectory methods the recorded run. ``progress`` reports the
    trajectory sweep on stderr (None, the default: where stderr is a terminal).
    """
    progress = check_progress(progress)
    check_fit(fit_)
    info = resolve_method(method)
    problem = fit_.problem
    X_arr, y_arr = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    if info.family == CLOSED_FORM:
        return np.asarray(hessian_influence(problem, fit_.sam, _root(fit_, info), X_arr, y_arr,
                                            variant=info.call))
    return np.asarray(trajectory_influence(problem, fit_.trajectory, X_arr, y_arr, method=info.call,
                                           progress=progress))


def _root(fit_: Fit, info: MethodInfo) -> FixedPoint:
    """The fit's verified root, which a closed-form method needs."""
    if not fit_.has_root or fit_.fixed_point is None:
        raise InvalidInputError(f"method {info.name!r} needs a verified SAM fixed point: "
                                f"{fit_.fixed_point_note}")
    return fit_.fixed_point


def fit_self_influence(fit_: Fit, method: str, progress: bool | None = None) -> Array:
    """I_j(ℓ_j): each training point's influence on its own loss, shape (n,).

    Closed-form methods use ``closed_form.self_influence`` (one solve per training point), trajectory
    methods `trajectory_self_influence` (the approximations and "forward" without the n × n matrix,
    "adjoint" with the training set as its n test functions).
    """
    progress = check_progress(progress)
    check_fit(fit_)
    info = resolve_method(method)
    key = ("self", info.name)
    if key in fit_._cache:
        return np.asarray(fit_._cache[key])
    problem = fit_.problem
    if info.family == CLOSED_FORM:
        value = self_influence(problem, fit_.sam, _root(fit_, info), variant=info.call)
    else:
        value = trajectory_self_influence(problem, fit_.trajectory, info.call, progress)
    fit_._cache[key] = np.asarray(value, dtype=np.float64)
    return np.asarray(fit_._cache[key])


