"""Hyper-parameter tuning: choose ρ and λ by gradient steps on a validation loss, with exact hypergradients.

Conventions
-----------
* The objective is the validation loss L(ρ, λ) = f(θ_T(ρ, λ)), f = the mean loss on (X_val, y_val), where
  θ_T(ρ, λ) is what training produces with those hyper-parameters (same data, initial θ, batch schedule,
  optimizer and its learning rates, rule). λ is the optimizer's weight decay (``penalty="weight_decay"``,
  the default) or the loss's L2 term (``penalty="l2"``, ``Problem(l2=λ)``). Its hypergradient
  ∂L/∂ρ = ∇f(θ_T)ᵀ dθ_T/dρ (and for λ) comes from

      "trajectory"   the derivative of the run itself (`trajectory_hyperparameter_sensitivity()`):
                     exact for any batch schedule, converged or not
      "closed_form"  the derivative of the SAM root θ̂ (`hyperparameter_sensitivity()`), used
                     where the run has reached it (a verified root, `refsam.tolerances.run_at_root()`;
                     then dθ_T/dρ equals dθ̂/dρ to that accuracy); elsewhere the trajectory's is used,
                     and each trial records which one it has
      "auto"         "closed_form" for full-batch runs tuning the optimizer's weight decay, else
                     "trajectory" (with λ in the loss alone, a convex model has no root)

* The search runs in log space, u = (log ρ, log λ), inside ``bounds`` (ρ and λ > 0; the chain rule
  gives ∂L/∂log ρ = ρ ∂L/∂ρ), by SciPy's L-BFGS-B; one *training* is one evaluation of L and its
  hypergradient. ``max_trainings`` bounds the search.
* `grid_search()` is the baseline: one training per point of a ρ × λ grid (geometric axes).
* What a report checks: the final hypergradient against central finite differences of retraining
  (`check_hypergradient()`), and the tuned point against the grid's best.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, RefsamError
from ..influence import (
    FixedPointError,
    hyperparameter_sensitivity,
    solve_fixed_point,
    trajectory_hyperparameter_sensitivity,
)
from ..objective import Problem, check_problem
from ..sam import SAM
from ..tolerances import run_at_root
from ..training import Optimizer, Trajectory, check_optimizer, train
from ..validation import check_choice, check_positive, check_positive_int, check_progress
from .fitting import progress_line
from .removal import mean_loss

__all__ = ["TUNING_METHODS", "GridComparison", "GridResult", "Trial", "TuningResult", "check_hypergradient",
           "compare_with_grid", "grid_search", "tune"]

TUNING_METHODS = ("auto", "closed_form", "trajectory")
PENALTIES = ("weight_decay", "l2")  # which λ is tuned: the optimizer's weight decay, or the loss's L2
DEFAULT_BOUNDS = ((1e-3, 1.0), (1e-4, 1.0))  # (ρ, λ)
ON_BOUND = 1e-6  # |log x − log bound| below which the tuned x sits on the bound (L-BFGS-B lands on it)

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Trial:
    """One training at (ρ, λ): the validation loss of what it produced and its hypergradient."""

    rho: float
    weight_decay: float
    loss: float
    grad_rho: float  # ∂L/∂ρ
    grad_weight_decay: float  # ∂L/∂λ
    method: str  # what the point and gradient are: "closed_form" (a verified root) or "trajectory"
    theta: Array = field(repr=False)


@dataclass(frozen=True)
class TuningResult:
    """The tuned (ρ, λ), every training the search used (``trials``) and how it stopped."""

    rho: float
    weight_decay: float
    loss: float
    trials: tuple[Trial, ...]
    message: str
    seconds: float
    bounds: tuple[tuple[float, float], tuple[float, float]] = DEFAULT_BOUNDS  # the search's ((ρ), (λ))

    @property
    def trainings(self) -> int:
        return len(self.trials)

    def bounds_hit(self) -> list[tuple[str, str, float]]:
        """The bounds the tuned point sits on, as (parameter, "lower" | "upper", bound): there the
        optimum may lie outside the searched box (an empty list: an interior point)."""
        hit = []
        for name, value, (low, high) in (("rho", self.rho, self.bounds[0]),
                                         ("weight_decay", self.weight_decay, self.bounds[1])):
            for side, bound in (("lower", low), ("upper", high)):
                if abs(math.log(value / bound)) <= ON_BOUND:
                    hit.append((name, side, bound))
        return hit


@dataclass(frozen=True)
class GridResult:
    """Validation loss on a ρ × λ grid: ``losses[a, b]`` at (rhos[a], weight_decays[b])."""

    rhos: Array
    weight_decays: Array
    losses: Array
    seconds: float

    @property
    def trainings(self) -> int:
        return int(self.losses.size)

    @property
    def best(self) -> tuple[float, float, float]:
        """(ρ, λ, loss) of the grid's lowest finite loss."""
        a, b = np.unravel_index(np.nanargmin(self.losses), self.losses.shape)
        return float(self.rhos[a]), float(self.weight_decays[b]), float(self.losses[a, b])

    def resolution(self) -> tuple[float, float]:
        """The grid's spacing in log ρ and log λ (its resolution in the space the search runs in)."""
        return (float(np.max(np.diff(np.log(self.rhos)), initial=0.0)),
                float(np.max(np.diff(np.log(self.weight_decays)), initial=0.0)))


class _Setup:
    """Everything fixed while (ρ, λ) vary: data, model, rule, optimizer, schedule, initial θ."""

    def __init__(self, problem: Problem, X_val: ArrayLike, y_val: ArrayLike, optimizer: Optimizer, rule: str,
                 kappa: float, steps: int, batch_size: int | None, seed: int, method: str,
                 penalty: str) -> None:
        problem = check_problem(problem)
        self.optimizer = check_optimizer(optimizer, problem.d)
        self.penalty = check_choice("penalty", penalty, PENALTIES)
        tuned = optimizer.weight_decay if penalty == "weight_decay" else problem.l2
        if np.ndim(tuned):
            raise InvalidInputError(f"tuning chooses one scalar λ; the {penalty} to tune is per coordinate")
        self.problem = problem
        self.X_val, self.y_val = problem.check_test(X_val, y_val, "X_val", "y_val")
        self.rule, self.kappa = rule, kappa
        SAM(0.1, rule, kappa)  # validates the rule and κ before any training
        self.steps = check_positive_int("steps", steps)
        self.batch_size = batch_size
        self.seed = seed
        method = check_choice("method", method, TUNING_METHODS)
        root_possible = batch_size is None and penalty == "weight_decay"
        if method == "auto":
            method = "closed_form" if root_possible else "trajectory"
        if method == "closed_form" and not root_possible:
            raise InvalidInputError("method='closed_form' needs full-batch training with the optimizer's "
                                    "weight decay tuned (a SAM root); use method='trajectory' for minibatch "
                                    "runs or penalty='l2'")
        self.method = method
        self.theta0 = problem.init_params(seed)

    def at(self, weight_decay: float) -> tuple[Problem, Optimizer]:
        """The problem and optimizer with λ = ``weight_decay`` where ``penalty`` puts it."""
        p = self.problem
        if self.penalty == "l2":
            return Problem(p.model, p.X, p.y, p.weights, l2=weight_decay), self.optimizer
        return p, self.optimizer.replace(weight_decay=weight_decay)

    def run(self, rho: float, weight_decay: float) -> tuple[Problem, SAM, Trajectory]:
        (problem, optimizer), sam = self.at(weight_decay), SAM(rho, self.rule, self.kappa)
        trajectory = train(problem, sam, optimizer, self.steps, batch_size=self.batch_size, seed=self.seed,
                           theta0=self.theta0, progress=False)
        return problem, sam, trajectory

    def loss(self, theta: Array) -> float:
        return mean_loss(self.problem, theta, self.X_val, self.y_val)

    def loss_gradient(self, theta: Array) -> Array:
        return np.asarray(np.mean(self.problem.model.per_sample_grads(theta, self.X_val, self.y_val), axis=0))


def _evaluate(setup: _Setup, rho: float, weight_decay: float) -> Trial:
    """Train at (ρ, λ) and return the validation loss of θ_T with its exact hypergradient (one training)."""
    problem, sam, trajectory = setup.run(rho, weight_decay)
    theta = trajectory.theta_final
    grad = setup.loss_gradient(theta)
    if setup.method == "closed_form":
        root = _converged_root(problem, sam, trajectory)
        if root is not None:
            closed = hyperparameter_sensitivity(problem, sam, root)
            return Trial(rho, weight_decay, setup.loss(theta), float(grad @ closed.d_rho),
                         float(grad @ _tuned(closed, setup.penalty)), "closed_form", theta)
    sensitivity = trajectory_hyperparameter_sensitivity(problem, trajectory, progress=False)
    return Trial(rho, weight_decay, setup.loss(theta), float(grad @ sensitivity.d_rho),
                 float(grad @ _tuned(sensitivity, setup.penalty)), "trajectory", theta)


def _tuned(sensitivity: Any, penalty: str) -> Array:
    """dθ/dλ for the tuned λ (scalar by construction of `_Setup`)."""
    value = sensitivity.d_weight_decay if penalty == "weight_decay" else sensitivity.d_l2
    assert value is not None
    return np.asarray(value)


def _converged_root(problem: Problem, sam: SAM, trajectory: Trajectory) -> Any:
    """The verified root the run has reached (module docstring), or None."""
    try:
        root = solve_fixed_point(problem, sam, trajectory.theta_final, optimizer=trajectory.optimizer(),
                                 progress=False)
    except FixedPointError:
        return None
    return root if root.converged and run_at_root(trajectory.theta_final, root.theta) else None


def _check_bounds(bounds: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        (r0, r1), (l0, l1) = bounds
        checked = ((check_positive("bounds", r0), check_positive("bounds", r1)),
                   (check_positive("bounds", l0), check_positive("bounds", l1)))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"`bounds` must be ((rho_min, rho_max), (wd_min, wd_max)) of numbers > 0: "
                                f"{error}") from None
    for low, high in checked:
        if not low < high:
            raise InvalidInputError(f"`bounds`: each lower bound must be below its upper bound, got "
                                    f"{bounds!r}")
    return checked


def tune(problem: Problem, X_val: ArrayLike, y_val: ArrayLike, optimizer: Optimizer, rho: float = 0.05,
         weight_decay: float = 0.01, *, rule: str = "sam", kappa: float = 0.01, steps: int = 300,
         batch_size: int | None = None, seed: int = 0, method: str = "auto", penalty: str = "weight_decay",
         bounds: Any = DEFAULT_BOUNDS, max_trainings: int = 25, ftol: float = 1e-9, gtol: float = 1e-6,
         progress: bool | None = None) -> TuningResult:
    """Minimise the validation loss over (ρ, λ) from the start (``rho``, ``weight_decay``) by L-BFGS-B in
    log space with exact hypergradients (module docstring); returns the best point evaluated.

    ``problem`` supplies the model, training data and sample weights, ``optimizer`` the base optimizer
    (its learning rate and momentum; the tuned λ replaces its weight decay, or the problem's ``l2`` with
    ``penalty="l2"``); the other keywords fix the training procedure. ``max_trainings``: the
    most trainings the search may use (each is one run plus, for the closed form, one root solve);
    ``ftol``, ``gtol``: L-BFGS-B's stopping rules (relative decrease of L; projected gradient in log space).
    """
    progress = check_progress(progress)
    setup = _Setup(problem, X_val, y_val, optimizer, rule, kappa, steps, batch_size, seed, method, penalty)
    (r_lo, r_hi), (l_lo, l_hi) = _check_bounds(bounds)
    rho, weight_decay = check_positive("rho", rho), check_positive("weight_decay", weight_decay)
    if not (r_lo <= rho <= r_hi and l_lo <= weight_decay <= l_hi):
        raise InvalidInputError(f"the start (rho={rho}, weight_decay={weight_decay}) must lie inside "
                                f"`bounds` {bounds!r}")
    max_trainings = check_positive_int("max_trainings", max_trainings)
    trials: list[Trial] = []
    start = time.perf_counter()

    def objective(u: Array) -> tuple[float, Array]:
        if len(trials) >= max_trainings:
            raise _BudgetSpent
        trial = _evaluate(setup, math.exp(u[0]), math.exp(u[1]))
        trials.append(trial)
        progress_line(f"tune: training {len(trials)}: rho={trial.rho:.4g} "
                      f"weight_decay={trial.weight_decay:.4g} validation loss {trial.loss:.6f}", progress)
        log_grad = [trial.rho * trial.grad_rho, trial.weight_decay * trial.grad_weight_decay]  # ∂L/∂log
        return trial.loss, np.array(log_grad)

    try:
        result = scipy.optimize.minimize(
            objective, np.log([rho, weight_decay]), jac=True, method="L-BFGS-B",
            bounds=[(math.log(r_lo), math.log(r_hi)), (math.log(l_lo), math.log(l_hi))],
            options={"maxfun": max_trainings, "maxiter": max_trainings, "ftol": ftol, "gtol": gtol})
        message = str(result.message)
    except _BudgetSpent:
        message = f"stopped after max_trainings={max_trainings} trainings"
    best = min(trials, key=lambda t: t.loss)
    return TuningResult(best.rho, best.weight_decay, best.loss, tuple(trials), message,
                        time.perf_counter() - start, ((r_lo, r_hi), (l_lo, l_hi)))


class _BudgetSpent(RefsamError):
    """Raised inside the objective when the training budget is used up (never escapes `tune()`)."""


def grid_search(problem: Problem, X_val: ArrayLike, y_val: ArrayLike, optimizer: Optimizer, rhos: ArrayLike,
                weight_decays: ArrayLike, *, rule: str = "sam", kappa: float = 0.01, steps: int = 300,
                batch_size: int | None = None, seed: int = 0, method: str = "auto",
                penalty: str = "weight_decay", progress: bool | None = None) -> GridResult:
    """The validation loss at every (ρ, λ) of the grid, each point one training like `tune()`'s."""
    progress = check_progress(progress)
    setup = _Setup(problem, X_val, y_val, optimizer, rule, kappa, steps, batch_size, seed, method, penalty)
    rho_axis = np.sort(np.asarray(rhos, dtype=np.float64).ravel())
    wd_axis = np.sort(np.asarray(weight_decays, dtype=np.float64).ravel())
    for name, axis in (("rhos", rho_axis), ("weight_decays", wd_axis)):
        if axis.size == 0 or not np.all(np.isfinite(axis)) or np.any(axis <= 0):
            raise InvalidInputError(f"`{name}` must be a non-empty array of finite numbers > 0")
    start = time.perf_counter()
    losses = np.empty((rho_axis.size, wd_axis.size))
    for a, r in enumerate(rho_axis):
        for b, lam in enumerate(wd_axis):
            losses[a, b] = setup.loss(setup.run(float(r), float(lam))[2].theta_final)
        progress_line(f"grid: {a + 1}/{rho_axis.size} rows of rho", progress)
    return GridResult(rho_axis, wd_axis, losses, time.perf_counter() - start)


@dataclass(frozen=True)
class GridComparison:
    """The tuned point against the grid's best, measured in the log space the search runs in.

    The tuned point agrees with the grid when it lies within one grid step of the grid's best on both
    axes (|Δ log ρ| ≤ step_rho and |Δ log λ| ≤ step_weight_decay); it is at least as good when its
    validation loss is at or below the grid's best (loss_difference = f tuned − f grid ≤ 0).
    """

    rho: float  # the grid's best ρ
    weight_decay: float  # the grid's best λ
    loss: float  # the grid's best f
    d_log_rho: float  # |log ρ_tuned − log ρ_grid|
    d_log_weight_decay: float
    step_rho: float  # the grid's spacing in log ρ
    step_weight_decay: float
    loss_difference: float  # f tuned − f grid

    @property
    def within_resolution(self) -> bool:
        return self.d_log_rho <= self.step_rho and self.d_log_weight_decay <= self.step_weight_decay

    @property
    def at_or_below(self) -> bool:
        return self.loss_difference <= 0

    def verdict(self) -> str:
        """One line: within the grid's resolution or not; the tuned f at/below the grid's best or above."""
        return (("within the grid's resolution" if self.within_resolution
                 else "NOT within the grid's resolution")
                + ("; the tuned f is at or below the grid's best" if self.at_or_below
                   else "; the tuned f is ABOVE the grid's best"))


def compare_with_grid(result: TuningResult, grid: GridResult) -> GridComparison:
    """How the tuned (ρ, λ) of ``result`` compares with the best point of ``grid``."""
    g_rho, g_lam, g_loss = grid.best
    step_rho, step_lam = grid.resolution()
    return GridComparison(g_rho, g_lam, g_loss, abs(math.log(result.rho / g_rho)),
                          abs(math.log(result.weight_decay / g_lam)), step_rho, step_lam,
                          result.loss - g_loss)


def check_hypergradient(problem: Problem, X_val: ArrayLike, y_val: ArrayLike, optimizer: Optimizer,
                        rho: float, weight_decay: float, *, h: float = 1e-5,
                        **procedure: Any) -> tuple[Trial, Array, float]:
    """(the trial at (ρ, λ), central finite differences of retraining at ρ ± hρ and λ ± hλ (∂L/∂ρ, ∂L/∂λ),
    their max relative difference from the exact hypergradient). Five trainings. ``procedure``: the
    keywords of `tune()` that fix training (rule, kappa, steps, batch_size, seed, method, penalty)."""
    setup = _Setup(problem, X_val, y_val, optimizer, procedure.get("rule", "sam"),
                   procedure.get("kappa", 0.01), procedure.get("steps", 300), procedure.get("batch_size"),
                   procedure.get("seed", 0), procedure.get("method", "auto"),
                   procedure.get("penalty", "weight_decay"))
    h = check_positive("h", h)
    trial = _evaluate(setup, rho, weight_decay)
    fd = np.empty(2)
    for k, (dr, dl) in enumerate(((h * rho, 0.0), (0.0, h * weight_decay))):
        plus = _evaluate(setup, rho + dr, weight_decay + dl).loss
        minus = _evaluate(setup, rho - dr, weight_decay - dl).loss
        fd[k] = (plus - minus) / (2 * (dr + dl))
    exact = np.array([trial.grad_rho, trial.grad_weight_decay])
    return trial, fd, float(np.max(np.abs(exact - fd)) / max(float(np.max(np.abs(fd))), 1e-300))
