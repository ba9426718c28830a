"""SAM training runs: the batch schedule, ``train`` and ``replay`` (each step: the SAM descent gradient
handed to the base optimizer, `refsam.training.step`).

A run is deterministic given (θ_0, batch schedule, the optimizer with its η schedule, rule, ρ, the loss's
L2 term, w); the `Trajectory` it returns records all of them, and the optimizer's state at
every step, and `replay()` re-runs a recorded schedule — with other sample weights for
counterfactual runs.

Batches: ``batch_size=None`` is the full batch at every step. Otherwise each epoch draws a seeded
permutation of [n] and cuts it into consecutive batches of ``batch_size``; the last batch of an epoch
holds the remainder (it is smaller when batch_size does not divide n, as with drop_last=False).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from ..errors import DivergenceError, InvalidInputError
from ..objective import Problem, check_problem
from ..sam import SAM, check_sam
from ..validation import check_finite_array, check_positive_int, check_progress, check_random_state, describe
from .clipping import GradientClipping, check_clipping
from .optimizers import Optimizer, State
from .step import StepTerms, sam_gradient
from .trajectory import Trajectory

__all__ = ["check_optimizer", "check_problem_sam", "check_trajectory", "make_batches", "replay",
           "replay_final", "train"]

Array = NDArray[np.float64]



def make_batches(n: int, steps: int, batch_size: int | None, seed: object) -> list[NDArray[np.int64]]:
    """The batch schedule: full batch, or seeded per-epoch shuffles cut into batches (see module doc)."""
    if batch_size is None:
        full = np.arange(n)
        return [full for _ in range(steps)]
    rng = check_random_state(seed)
    batches: list[NDArray[np.int64]] = []
    while len(batches) < steps:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            batches.append(np.sort(perm[start:start + batch_size]))
            if len(batches) == steps:
                break
    return batches


def _run(problem: Problem, sam: SAM, optimizer: Optimizer, theta0: Array, batches: list[NDArray[np.int64]],
         lrs: Array, clipping: GradientClipping | None,
         progress: bool = False) -> tuple[Array, Array, dict[str, Array], Array]:
    """Run the SAM steps over a given schedule, recording every state (train and replay).

    Returns (θ_0 … θ_T, ε_0 … ε_{T−1}, {state name: its values after steps 0 … T−1, (T, d)},
    ‖g_0‖ … ‖g_{T−1}‖).
    """
    steps = len(lrs)
    thetas = np.empty((steps + 1, problem.d))
    epsilons = np.empty((steps, problem.d))
    states = {name: np.empty((steps, problem.d)) for name in optimizer.state_names + sam.state_names}
    grad_norms = np.empty(steps)
    thetas[0] = theta0
    for t, theta, terms, state in _steps(problem, sam, optimizer, theta0, batches, lrs, clipping, None,
                                         progress):
        thetas[t + 1], epsilons[t] = theta, terms.eps
        grad_norms[t] = scipy.linalg.norm(terms.g)  # BLAS nrm2: no overflow where g·g would
        for name, value in zip(optimizer.state_names, state):
            states[name][t] = value
        for name in sam.state_names:  # the rule's own state (Friendly SAM's running mean)
            states[name][t] = terms.rule_state
    return thetas, epsilons, states, grad_norms


def _steps(problem: Problem, sam: SAM, optimizer: Optimizer, theta0: Array, batches: list[NDArray[np.int64]],
           lrs: Array, clipping: GradientClipping | None, weights: Array | None, progress: bool,
           removed_batches: bool = False) -> Iterator[tuple[int, Array, StepTerms, State]]:
    """The SAM iteration itself, the single code path of every run: yields (t, θ_{t+1}, step t's terms
    (g_t, ε_t, ŵ_t, g̃_t), the optimizer's state after step t).

    θ_0 may be a block (d, K) with ``weights`` (n, K): K runs advance together, each column its own
    run (block replays); every yielded array is then (d, K). ``removed_batches``: see
    `refsam.training.step.perturbations()` (a counterfactual bank's replays only). Step t runs the rule
    of step t (`SAM.at_step`) with the rule's own state (Friendly SAM's running mean, zeros before its
    first step), carried in the yielded terms.
    """
    steps = len(lrs)
    sam.check_steps(steps)
    report_every = max(1, steps // 10)
    theta, state = theta0, optimizer.init_state(theta0)
    rule_state = np.zeros_like(theta0) if sam.state_names else None
    for t in range(steps):
        terms = sam_gradient(problem, sam.at_step(t), theta, batches[t], weights,
                             removed_batches=removed_batches, rule_state=rule_state)
        rule_state = terms.rule_state
        descent = terms.descent if clipping is None else clipping.apply(terms.descent)  # g̃ (clipped)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
            theta, state = optimizer.update(t, float(lrs[t]), theta, state, descent)
        if not np.all(np.isfinite(theta)):
            raise DivergenceError(
                f"training diverged at step {t}: θ_{t + 1} has non-finite entries; lower the optimizer's "
                f"`lr` (got {lrs[t]}) or `rho` (got {sam.at_step(t).rho} at this step)"
            )
        if progress and ((t + 1) % report_every == 0 or t + 1 == steps):
            print(f"  training: step {t + 1}/{steps}", file=sys.stderr, flush=True)
        yield t, theta, terms, state


def _check_batches(batches: object, n: int) -> list[NDArray[np.int64]]:
    """An external batch schedule: a non-empty sequence of non-empty integer index arrays in 0..n−1."""
    try:
        schedule = list(batches)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidInputError(f"`batches` must be a sequence of index arrays, "
                         f"got {type(batches).__name__}") from None
    if not schedule:
        raise InvalidInputError("`batches` must hold at least one batch, got an empty sequence")
    out = []
    for t, batch in enumerate(schedule):
        idx = np.asarray(batch)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise InvalidInputError(f"`batches[{t}]` must be a non-empty 1-d array of ints, got "
                                    f"{describe(idx)}")
        if idx.min() < 0 or idx.max() >= n:
            raise InvalidInputError(
                f"`batches[{t}]` must lie in 0..{n - 1}, got values in {idx.min()}..{idx.max()}")
        out.append(idx.astype(np.int64))
    return out


def train(problem: Problem, sam: SAM, optimizer: Optimizer, steps: int | None = None, *,
          batch_size: int | None = None, batches: object = None, seed: object = 0,
          theta0: ArrayLike | None = None, clip_grad_norm: float | GradientClipping | None = None,
          progress: bool | None = None) -> Trajectory:
    """Train with SAM on top of a base optimizer and record the trajectory.

    Parameters
    ----------
    problem : Problem
        Model, data, sample weights and the loss's own L2 term (``Problem(l2=…)``).
    sam : SAM
        The perturbation rule and radius ρ.
    optimizer : Optimizer
        The base optimizer, e.g. ``refsam.SGD(lr, momentum=0.9, nesterov=True, weight_decay=λ)``: its
        learning rate (a float or a per-step array), momentum and weight decay.
    steps : int >= 1
        T. May be omitted when ``batches`` is given (T = len(batches)) or when ``lr`` is a schedule
        (T = its length).
    batch_size : int in 1..n, or None for the full batch
        Ignored when ``batches`` is given.
    batches : sequence of int arrays, optional
        An external batch schedule B_0 … B_{T−1} (e.g. the order a PyTorch or JAX run used): replayed as
        given; no shuffling.
    seed : None, int or np.random.Generator
        Seeds the initial θ (when ``theta0`` is None) and then the batch shuffles. Passing
        ``theta0=problem.init_params(seed)`` draws the same batches as omitting it.
    theta0 : array (d,), optional
        Initial parameters; default ``problem.init_params(seed)``.
    clip_grad_norm : None, float > 0 or GradientClipping
        Clip the descent gradient g̃ to this global norm before the optimizer sees it: a float c is
        ``torch.nn.utils.clip_grad_norm_(max_norm=c)`` (s = min(1, c/(‖g̃‖ + 1e-6))), and
        ``GradientClipping(c, "optax")`` is ``optax.clip_by_global_norm(c)`` (s = c/max(‖g̃‖, c))
        (`refsam.training.clipping`). Recorded by the run; every exact method differentiates it.
    progress : bool or None
        Print progress to stderr every 10% of the steps (None: where stderr is a terminal).

    Returns
    -------
    Trajectory

    Raises
    ------
    ZeroGradientError
        If a batch gradient is exactly zero under the SAM or ASAM rule (ε undefined).
    """
    check_problem_sam(problem, sam)
    check_optimizer(optimizer, problem.d)
    clipping = check_clipping(clip_grad_norm)
    progress = check_progress(progress)
    schedule = None if batches is None else _check_batches(batches, problem.n)
    lr_steps = None if isinstance(optimizer.lr, float) else optimizer.lr.shape[0]
    if schedule is not None:
        if steps is not None and check_positive_int("steps", steps) != len(schedule):
            raise InvalidInputError(
                f"`steps` ({steps}) must equal len(batches) ({len(schedule)}), or be omitted")
        if batch_size is not None:
            raise InvalidInputError("pass either `batches` (an external schedule) or `batch_size`, not both")
        steps = len(schedule)
    elif steps is None:
        if lr_steps is None:
            raise InvalidInputError("`steps` is required unless an external schedule `batches` is given "
                                    "or the optimizer's `lr` is a per-step array")
        steps = lr_steps
    steps = check_positive_int("steps", steps)
    lrs = optimizer.learning_rates(steps)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if batch_size > problem.n:
            raise InvalidInputError(
                f"`batch_size` must be <= n={problem.n} (or None for the full batch), got {batch_size}"
            )
    rng = check_random_state(seed)
    seed_record = int(seed) if isinstance(seed, (int, np.integer)) else None
    drawn = problem.init_params(rng)  # drawn either way, so that a given θ_0 leaves the batches unchanged
    theta0 = drawn if theta0 is None else problem.check_theta(theta0, "theta0")
    if schedule is None:
        schedule = make_batches(problem.n, steps, batch_size, rng)
    thetas, epsilons, states, grad_norms = _run(problem, sam, optimizer, theta0, schedule, lrs, clipping,
                                                progress)
    config = {
        "model": problem.model.spec(),
        **sam.config(),
        "l2": problem.l2_config(),
        "optimizer": optimizer.config(),
        "clip_grad_norm": None if clipping is None else clipping.config(),
        "batch_size": batch_size,
        "seed": seed_record,
        "steps": steps,
        "n": problem.n,
        "d": problem.d,
        "data_sha256": problem.data_fingerprint(),
        "schedule": "external" if batches is not None else ("full" if batch_size is None else "shuffled"),
    }
    return Trajectory(thetas, epsilons, schedule, lrs, problem.weights, config, states=states,
                      grad_norms=grad_norms)


def check_problem_sam(problem: object, sam: object) -> tuple[Problem, SAM]:
    """``problem`` and ``sam`` checked by their types' one validators (objective.check_problem,
    sam.check_sam)."""
    return check_problem(problem), check_sam(sam)


def check_optimizer(optimizer: object, d: int) -> Optimizer:
    """The one check that ``optimizer`` is a refsam optimizer fitting θ's d coordinates."""
    if not isinstance(optimizer, Optimizer):
        raise InvalidInputError(f"`optimizer` must be a refsam optimizer such as refsam.SGD(lr, ...), got "
                                f"{type(optimizer).__name__}")
    optimizer.check_dimension(d)
    return optimizer


def check_trajectory(trajectory: object) -> Trajectory:
    """The one check that ``trajectory`` is a refsam.Trajectory."""
    if not isinstance(trajectory, Trajectory):
        raise InvalidInputError(f"`trajectory` must be a refsam.Trajectory, got {type(trajectory).__name__}")
    return trajectory


def replay_final(problem: Problem, trajectory: Trajectory, weights: ArrayLike, *,
                 removed_batches: bool = False) -> Array:
    """θ_T of the recorded schedule replayed with each row of ``weights`` (K, n): K counterfactual runs
    advanced together as one (d, K) block — two matrix products per step for all of them where the
    model has `column_grads()` (the linear models), one gradient per run otherwise.

    Returns (K, d): row k is ``replay(problem, trajectory, weights[k]).theta_final`` up to the rounding
    of a matrix product against K vector products (≤ 1e-13 relative on runs that settle, tested).
    A run whose step map expands (spectral radius > 1: SAM oscillating, not converging) amplifies that
    rounding like any other: measured 2e-3 apart after 100 of 300 such steps (radius 2.3), while the
    one-at-a-time ``replay`` reproduces the recorded run bit for bit. Nothing else is stored.
    ``removed_batches``: a step whose batch has all its weights zero in a row moves that run by the
    optimizer's step on its weight decay alone (ε = 0, g̃ = 0; `refsam.training.step.perturbations()`)
    instead of raising ZeroGradientError — what a counterfactual bank's subsets need.
    """
    check_trajectory(trajectory).check_problem(problem)
    W = check_finite_array("weights", weights, ndim=2)
    if W.shape[1] != problem.n or W.shape[0] == 0:
        raise InvalidInputError(f"`weights` must have shape (K >= 1, {problem.n}), got {W.shape}")
    if np.any(W < 0):
        raise InvalidInputError(f"`weights` must be >= 0, got minimum {float(W.min())!r}")
    theta0 = np.repeat(trajectory.theta0[:, None], W.shape[0], axis=1)  # (d, K)
    final = theta0
    for _, final, _, _ in _steps(problem, trajectory.sam(), trajectory.optimizer(), theta0,  # noqa: B007
                                 trajectory.batches, trajectory.lrs, trajectory.clipping(),
                                 np.ascontiguousarray(W.T), False, removed_batches):
        pass  # only the last state is kept
    return np.ascontiguousarray(final.T)


def replay(problem: Problem, trajectory: Trajectory, weights: ArrayLike | None = None,
           progress: bool | None = None) -> Trajectory:
    """Re-run a recorded schedule (θ_0, batches, the optimizer and its η_t, the SAM rule) on ``problem``.

    With ``weights=None`` the run uses ``problem.weights``; a replay with the recorded weights reproduces
    the trajectory bit for bit. Other weights give the counterfactual run (same init, batches and
    learning rates), e.g. ``w_j = 0`` for leave-one-out or ``w_j = 1 ± h`` for finite differences.
    ``progress``: as in `train()`.
    """
    check_trajectory(trajectory).check_problem(problem)
    progress = check_progress(progress)
    if weights is not None:
        problem = problem.with_weights(weights)
    thetas, epsilons, states, grad_norms = _run(problem, trajectory.sam(), trajectory.optimizer(),
                                                trajectory.theta0, trajectory.batches, trajectory.lrs,
                                                trajectory.clipping(), progress)
    config = dict(trajectory.config)
    return Trajectory(thetas, epsilons, trajectory.batches, trajectory.lrs, problem.weights, config,
                      states=states, grad_norms=grad_norms)
