"""Gradient-trajectory influence: the exact derivative of a recorded SAM run, and its approximations.

Conventions
-----------
* Influence of training point j on a scalar f: I_j(f) = ∂ f(θ_T(w)) / ∂ w_j at the weights the run was
  recorded with (``trajectory.weights``, all ones by default), holding fixed everything else the run
  used: θ_0, the batches B_t and the learning rates η_t. −I_j(f) predicts the change of f when j is
  removed (Δw_j = −1). Test functions are the per-sample test losses f_k(θ) = ℓ(z_k^test, θ);
  results have shape (n_train, n_test); the parameter target dθ_T/dw_j has shape (n_train, d).
* One step (`refsam.training.step`), F_t = F_{B_t,w}, H_t(·) = ∇²F_t (data term, weighted by
  w), c_{t,j} = 1[j ∈ B_t]/|B_t| (the derivative of w_j/|B_t|), λ_in = ``problem.l2`` (the loss's L2),
  λ_out = the optimizer's weight decay; written here for SGD without momentum (the optimizer's own
  update and its derivatives, `refsam.training.optimizers`, take over after g̃_t):

      g_t = ∇F_t(θ_t) + λ_in θ_t       ε_t = ε(θ_t; g_t)       ŵ_t = θ_t + ε_t
      g̃_t = ∇F_t(ŵ_t) + λ_in ŵ_t                     θ_{t+1} = θ_t − η_t [g̃_t + λ_out θ_t]

  With P_t = ∂ε/∂g and S_t = ∂ε/∂θ|_g (ASAM's T term, zero for SAM and USAM) at (θ_t, g_t), and
  K_t(x) = H_t(x) + λ_in I:

      A_t     = ∂θ_{t+1}/∂θ_t = I − η_t [K_t(ŵ_t) (I + P_t K_t(θ_t) + S_t) + λ_out I]
      b_{t,j} = ∂θ_{t+1}/∂w_j = −η_t c_{t,j} [∇ℓ_j(ŵ_t) + K_t(ŵ_t) P_t ∇ℓ_j(θ_t)]

  (With E_t = P_t K_t(θ_t) + S_t this is A_t = I − η_t [K_t(ŵ_t)(I + E_t) + λ_out I], the step form of
  J = ∂G/∂θ; every product above is a batch derivative of ``problem.at(x, B_t)``.) The one home of
  these Jacobians is `refsam.training.linearised.SAMStep`; this module runs its recursions.
* Methods (``method=``; the method table `refsam.influence.methods`; hyphens are accepted for
  underscores, "first-order" = "first_order"):

      "adjoint"   reverse recursion, exact:  v_T = ∇f(θ_T);  for t = T−1 … 0:
                      I_j += v_{t+1}ᵀ b_{t,j};   v_t = A_tᵀ v_{t+1}
                  Per step: 2 batch Hessian-vector products, 2 batch Jacobian-vector products, O(d)
                  SAM-rule products (g_t from ε_t and the stored ‖g_t‖; one batch gradient where the
                  run cannot give it, `_stored_gradient()`). No d×d matrix; memory is the
                  trajectory plus O(n + d) per test function. All test functions run together.
      "forward"   tangent recursion, exact:  Θ̇_0 = 0, Θ̇_{t+1} = A_t Θ̇_t + b_t, dθ_T/dw = Θ̇_T (d, n):
                  n tangents at once; a cross-check of the adjoint (it applies A_t, not A_tᵀ).
      "autodiff"  autograd through a re-implementation of the training loop written with
                  Problem.objective and SAM.perturbation only (`refsam.influence.autodiff`):
                  independent of every formula above. Slow (O(T) tape, one reverse pass per test
                  function); for tests.
      "first_order"              A_t ≈ I and the inner term K P ∇ℓ_j(θ_t) dropped, test gradient at θ_T:
                                     I_j ≈ −Σ_t γ_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(θ_T)
                                 (γ_t = η_t without momentum; with momentum the total weight of step
                                 t's direction in θ_T, `step_weights()`)
      "first_order_unperturbed"  the same with ∇ℓ_j(θ_t) in place of ∇ℓ_j(ŵ_t)
      "tracin"                   TracIn: like first_order but the test gradient is taken at the same
                                 checkpoint as the training gradient:  −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(ŵ_t)
      "tracin_unperturbed"       −Σ_t η_t c_{t,j} ∇ℓ_j(θ_t)ᵀ ∇f(θ_t)

When each is exact: the three exact methods are the derivative of the run itself, for any batch
schedule, any number of steps, converged or not, in both regularisation modes (they need ‖g_t‖ ≠ 0 at
every step for the SAM and ASAM rules, as training does). The approximations are exact only in
degenerate cases (first_order with T = 1 and ρ = 0: no later step to propagate through, no inner
term, on an SGD run without clipping; they refuse Adam, AdamW and clipped runs); docs/trajectory.md
derives the recursions and measures the approximations against the exact result and against
leave-one-out replays.
"""


from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, check_finite_result
from ..objective import Problem, check_problem
from ..sam import SAM
from ..training import SGD, GradientClipping, Optimizer, Trajectory, check_trajectory, perturbations
from ..training.linearised import LinearisedPerturbation, SAMStep, scatter_add
from ..validation import check_positive_int, check_progress
from .autodiff import autodiff_through_training
from .closed_form import HyperparameterSensitivity
from .methods import TRAJECTORY_APPROXIMATIONS, TRAJECTORY_EXACT, TRAJECTORY_METHODS

__all__ = [
    "check_run",
    "step_weights",
    "trajectory_hyperparameter_sensitivity",
    "trajectory_influence",
    "trajectory_parameter_influence",
    "trajectory_self_influence",
]


Array = NDArray[np.float64]


# -- public API --------------------------------------------------------------------------------------

def trajectory_influence(problem: Problem, trajectory: Trajectory, X_test: ArrayLike, y_test: ArrayLike,
                         method: str = "adjoint", progress: bool | None = None, *,
                         last_steps: int | None = None, checkpoints: int | None = None,
                         verify: bool = True) -> Array:
    """I_j(ℓ(z_k^test, ·)) through the recorded run, shape (n_train, n_test).

    entry [j, k] = ∂ ℓ(z_k^test, θ_T(w)) / ∂ w_j at w = ``trajectory.weights``; −entry [j, k] is the
    first-order prediction of the change of test loss k when training point j is removed.

    Parameters
    ----------
    problem : Problem
        The problem the run was recorded on (checked with ``trajectory.check_problem``). Its sample
        weights are ignored: the derivative is taken at the weights the run used, ``trajectory.weights``.
    trajectory : Trajectory
        The recorded run (θ_t, ε_t, B_t, η_t).
    X_test : array (m, p)
        The test points whose losses are the functions f_k.
    y_test : int array (m,)
        Their labels.
    method : str
        One of `TRAJECTORY_METHODS` (see the module docstring):
        "adjoint" (default, exact, fastest),
        "forward" and "autodiff" (exact cross-checks), or an approximation: "first_order",
        "first_order_unperturbed", "tracin", "tracin_unperturbed".
    progress : bool or None
        Print progress to stderr every 10% of the steps (None: where stderr is a terminal).
    last_steps : int, optional
        With "adjoint": run the reverse recursion over the last K = ``last_steps`` steps only, the
        truncated adjoint I_j ≈ Σ_{t ≥ T−K} v_{t+1}ᵀ b_{t,j} (an approximation; K ≥ T is the exact one).
    checkpoints : int, optional
        With the TracIn methods: k checkpoints instead of every step (TracInCP). The T steps are cut into
        k consecutive segments of (nearly) equal length; segment s, steps [a_s, b_s), is represented by
        the checkpoint at its first step:  I_j ≈ −Σ_s ∇ℓ_j(x_{a_s})ᵀ ∇f(x_{a_s}) Σ_{t∈s} γ_t c_{t,j},
        x = ŵ (or θ for "tracin_unperturbed"). k = T is the per-step TracIn.
    verify : bool
        First replay the run (`verify()`, one training run, remembered per run)
        and refuse, with `UnverifiedRunError`, a run that its replay
        does not reproduce (an edited θ_t or ε_t, a changed configuration, another problem): its
        derivative would be the derivative of no run. ``verify=False`` differentiates the record as it
        is (e.g. a run recorded by another framework whose rounding differs by more than 1e-9).

    Returns
    -------
    array (n_train, n_test)

    Notes
    -----
    Cost: "adjoint" ≈ 2 HVPs + 2 batch JVPs per step for all m test functions at once
    (≤ 3× the training run, benchmarks/adjoint_vs_training.py); "forward" the same with n directions;
    the approximations one batch JVP per step (TracIn also m test gradients per step).
    """
    method = _check_method(method, TRAJECTORY_METHODS)
    problem = check_run(problem, trajectory, verify, "trajectory_influence")
    X_test, y_test = problem.check_test(X_test, y_test)
    if last_steps is not None:
        if method != "adjoint":
            raise InvalidInputError(f"`last_steps` truncates the adjoint recursion: it needs "
                                    f"method='adjoint', got {method!r}")
        last_steps = check_positive_int("last_steps", last_steps)
    if checkpoints is not None:
        if not method.startswith("tracin"):
            raise InvalidInputError(f"`checkpoints` is for the TracIn methods, got method={method!r}")
        checkpoints = check_positive_int("checkpoints", checkpoints)
        if checkpoints > trajectory.steps:
            raise InvalidInputError(f"`checkpoints` must be at most the run's {trajectory.steps} steps, "
                                    f"got {checkpoints}")
    progress = check_progress(progress)
    result: Array
    if method == "autodiff":
        result = autodiff_through_training(problem, trajectory,
                                           lambda theta: problem.model.losses(theta, X_test, y_test))
    elif method in TRAJECTORY_APPROXIMATIONS:
        result = _approximation(problem, trajectory, X_test, y_test, method, progress, checkpoints)
    else:
        test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test).T  # (d, m)
        if method == "adjoint":
            result = _adjoint(problem, trajectory, test_grads, progress, last_steps)
        else:
            result = _forward(problem, trajectory, progress) @ test_grads  # (n, d) @ (d, m)
    return check_finite_result(f"trajectory_influence(method={method!r})", result)


def trajectory_self_influence(problem: Problem, trajectory: Trajectory, method: str = "adjoint",
                              progress: bool | None = None, *, verify: bool = True) -> Array:
    """I_j(ℓ_j) through the recorded run: each training point's influence on its own loss, shape (n,),
    the diagonal of ``trajectory_influence(problem, trajectory, problem.X, problem.y, method)``.

    The approximations and "forward" give it without the n × n matrix. An approximation's term for j at
    step t is then γ_t c_{t,j} ∇ℓ_j(x_t)ᵀ∇ℓ_j(y_t), row-wise products of the batch's per-sample gradients
    (O(|B_t| d) per step instead of O(|B_t| n d) for the built-in models; a user model pays
    min(|B_t|, d) autograd passes per step for its per-sample gradients where the matrix paid n);
    "forward" takes the row-wise products of dθ_T/dw, (n, d), with the per-sample gradients at θ_T.
    "adjoint" and "autodiff" need the n test functions: the diagonal of the whole matrix. Parameters as
    in `trajectory_influence()`.
    """
    method = _check_method(method, TRAJECTORY_METHODS)
    problem = check_run(problem, trajectory, verify, "trajectory_self_influence")
    progress = check_progress(progress)
    result: Array
    if method in TRAJECTORY_APPROXIMATIONS:
        result = _approximation(problem, trajectory, problem.X, problem.y, method, progress, diagonal=True)
    elif method == "forward":
        own = problem.model.per_sample_grads(trajectory.theta_final, problem.X, problem.y)  # ∇ℓ_j(θ_T)
        result = np.einsum("jk,jk->j", _forward(problem, trajectory, progress), own)
    else:
        result = np.diag(trajectory_influence(problem, trajectory, problem.X, problem.y, method, progress,
                                              verify=False)).copy()
    return check_finite_result(f"trajectory_self_influence(method={method!r})", result)


def trajectory_parameter_influence(problem: Problem, trajectory: Trajectory, method: str = "adjoint",
                                   progress: bool | None = None, *, verify: bool = True) -> Array:
    """dθ_T/dw_j through the recorded run, shape (n_train, d) (row j).

    ``method`` is "adjoint" (d adjoint vectors, one per coordinate of θ_T: a (d, d) block), "forward"
    (n tangents: a (d, n) block — the cheaper choice when n < d) or "autodiff"; all three are exact.
    Other arguments (``verify`` included) as `trajectory_influence()`.
    """
    method = _check_method(method, TRAJECTORY_EXACT)
    problem = check_run(problem, trajectory, verify, "trajectory_parameter_influence")
    progress = check_progress(progress)
    if method == "autodiff":
        result = autodiff_through_training(problem, trajectory, lambda theta: theta)
    elif method == "adjoint":
        result = _adjoint(problem, trajectory, np.eye(problem.d), progress)  # coordinates of θ_T
    else:
        result = _forward(problem, trajectory, progress)
    return check_finite_result(f"trajectory_parameter_influence(method={method!r})", result)


def trajectory_hyperparameter_sensitivity(problem: Problem, trajectory: Trajectory,
                                          progress: bool | None = None, *,
                                          verify: bool = True) -> HyperparameterSensitivity:
    """dθ_T/dρ, dθ_T/dλ (the optimizer's weight decay), dθ_T/dλ₂ (the loss's ``l2``) and dθ_T/ds (the
    learning-rate schedule scaled, η_t → s η_t at s = 1) through the recorded run, each shape (d,) (None
    for a λ that is per coordinate): the run's own hypergradients.

    The same run (θ_0, batches B_t, η_t, rule, optimizer) re-run at ρ + dρ, λ + dλ or λ₂ + dλ₂; exact for
    any batch schedule, converged or not — where the closed form (`hyperparameter_sensitivity()`)
    needs a root. Four tangent columns of the forward recursion (`_tangents()`), started at Θ̇_0 = 0,
    with the hyper-parameters' own terms added at every step:

        ġ  = K_t(θ_t) Θ̇ + [θ_t in the λ₂ column]                          (g = ∇F + λ₂ θ)
        ŵ̇  = Θ̇ + P_t ġ + S_t Θ̇ + [∂ε/∂ρ = ε(θ_t; g_t)|_{ρ=1} in the ρ column]
        ġ̃  = K_t(ŵ_t) ŵ̇ + [ŵ_t in the λ₂ column]

    then the optimizer's tangent with θ_t in the λ column (d_t = g̃_t + λθ_t), and in the s column
    η_t ∂θ_{t+1}/∂η_t = −η_t X_t (every update is θ_t − η_t X_t, `Optimizer.lr_derivative()`; one extra
    batch gradient per step where the optimizer's derivatives do not already read g̃_t). A validation loss
    f(θ_T) has the hypergradients ∇f(θ_T)ᵀ d_rho, ∇f(θ_T)ᵀ d_weight_decay, ∇f(θ_T)ᵀ d_l2 and
    ∇f(θ_T)ᵀ d_lr_scale. Cost: about 2 Hessian-vector products per step per column. ``verify`` as in
    `trajectory_influence()`.
    """
    problem = check_run(problem, trajectory, verify, "trajectory_hyperparameter_sensitivity")
    progress = check_progress(progress)
    optimizer = trajectory.optimizer()
    dtheta = _tangents(problem, trajectory, 4, _HyperparameterSources(), progress,
                       "hyper-parameter tangents", dlam=np.array([0.0, 1.0, 0.0, 0.0]),
                       dlr_scale=np.array([0.0, 0.0, 0.0, 1.0]))
    dtheta = check_finite_result("trajectory_hyperparameter_sensitivity", dtheta)
    scalar = (np.ndim(optimizer.weight_decay) == 0, np.ndim(problem.l2) == 0)
    return HyperparameterSensitivity(d_rho=dtheta[:, 0].copy(),
                                     d_weight_decay=dtheta[:, 1].copy() if scalar[0] else None,
                                     d_l2=dtheta[:, 2].copy() if scalar[1] else None,
                                     d_lr_scale=dtheta[:, 3].copy())


# -- validation ---------------------------------------------------------------------------------------

def _check_method(method: object, allowed: tuple[str, ...]) -> str:
    name = method.replace("-", "_") if isinstance(method, str) else method
    if name not in allowed:
        raise InvalidInputError(f"`method` must be one of {list(allowed)}, got {method!r}")
    return str(name)


def check_run(problem: object, trajectory: object, verify: bool = False, what: str = "") -> Problem:
    """Check that ``trajectory`` was recorded on ``problem`` (with ``verify``: that its replay reproduces
    it, else `UnverifiedRunError` naming ``what``) and return the
    problem at the run's weights (where every trajectory derivative is taken)."""
    problem = check_problem(problem)
    trajectory = check_trajectory(trajectory)
    trajectory.check_problem(problem)
    if trajectory.steps == 0:
        raise InvalidInputError("`trajectory` must have at least one step, got 0")
    if not isinstance(verify, (bool, np.bool_)):
        raise InvalidInputError(f"`verify` must be True or False, got {verify!r}")
    if verify:
        trajectory.require_replay(problem, what or "the trajectory method")
    return problem.with_weights(trajectory.weights)


def _progress(t_done: int, steps: int, what: str, enabled: bool) -> None:
    if enabled and (t_done % max(1, steps // 10) == 0 or t_done == steps):
        print(f"  {what}: step {t_done}/{steps}", file=sys.stderr, flush=True)


# -- one step, from the record -----------------------------------------------------------------------

def _step(problem: Problem, trajectory: Trajectory, sam: SAM, optimizer: Optimizer,
          clipping: GradientClipping | None, t: int) -> SAMStep:
    """Step t of the recorded run as a `SAMStep`, built from the
    stored θ_t, the optimizer's state before it, and (one perturbation) the stored ε_t: ŵ_t = θ_t + ε_t
    as recorded, g_t rebuilt from ε_t where the rule allows (`_stored_gradient()`), else recomputed
    (one batch gradient). Warns where g_t is round-off-level cancellation."""
    theta = trajectory.thetas[t]
    single = sam.m_sharpness is None or len(trajectory.batches[t]) <= sam.m_sharpness
    step = SAMStep(problem, sam, optimizer, t, float(trajectory.lrs[t]), theta,
                   trajectory.state(t, optimizer), trajectory.batches[t],
                   g=_stored_gradient(trajectory, sam.at_step(t), t) if single else None,
                   w_hat=theta + trajectory.epsilons[t] if single else None,
                   clipping=clipping, rule_state=trajectory.rule_state(t, sam))
    step.warn_if_cancelled()
    return step


def _stored_gradient(trajectory: Trajectory, sam: SAM, t: int) -> Array | None:
    """g_t from the recorded ε_t where the rule lets it be inverted (None: recompute it):

        SAM   ε = ρ g/(‖g‖ + e)   ⇒   g = (ε/ρ)(‖g‖ + e)   with the stored ‖g_t‖ (``grad_norms``)
        USAM  ε = ρ g             ⇒   g = ε/ρ

    (ε/ρ first: its entries are at most 1 in size for SAM, so the product cannot overflow where g did not.)
    Equal to the recomputed g_t to rounding (≤ 4 eps per entry, relative to ‖g_t‖; tested). ASAM's
    ε = ρ T²g/‖Tg‖ is not inverted (T = diag(|θ| + κ) is singular at κ = 0), nor ρ = 0 (ε = 0 carries
    nothing), nor an ε_t with an entry in float64's subnormal range or an all-zero ε_t (an underflowed ε
    carries too few digits of g: found by the fuzz suite at ρ ≈ 1e-244 on rescaled data), nor the other
    rules or a ``perturb_mask`` (ε carries g on the mask only). For steps with one perturbation only (an
    m-sharpness step has one ε per chunk); ``sam`` is the rule of step t."""
    eps = trajectory.epsilons[t]
    tiny = np.finfo(np.float64).tiny
    if sam.perturb_mask is not None or sam.rho == 0.0 or not np.any(eps) \
            or np.any((eps != 0.0) & (np.abs(eps) < tiny)):
        return None
    unit = eps / sam.rho
    if sam.rule == "usam":
        return np.asarray(unit, dtype=np.float64)
    if sam.rule == "sam" and trajectory.grad_norms is not None:
        return np.asarray(unit * (float(trajectory.grad_norms[t]) + sam.norm_eps), dtype=np.float64)
    return None


# -- the exact recursions ---------------------------------------------------------------------------

def _adjoint(problem: Problem, trajectory: Trajectory, V_T: Array, progress: bool,
             last_steps: int | None = None) -> Array:
    """Reverse recursion for the k functions whose gradients at θ_T are the columns of V_T (d, k).

    Returns I (n, k) with I[j, :] = Σ_t (∂θ_{t+1}/∂w_j)ᵀ v_{t+1}: from v_T = V_T and the optimizer state's
    adjoint 0 (f depends on θ_T only), each step back is `SAMStep.vjp()` — the optimizer's VJP (for SGD
    without momentum D = −η_t v_{t+1}, the adjoint of g̃_t), then per perturbation
        Q = K_t(ŵ_t) D,   PQ = P_t Q
        I_j += c_{t,j} [∇ℓ_j(ŵ_t)ᵀ D + ∇ℓ_j(θ_t)ᵀ PQ]
        v_t = v_{t+1} + λ_out D + Q + K_t(θ_t) PQ + S_tᵀ Q
    ``last_steps`` = K stops after the K last steps (the truncated adjoint; None: all of them).
    """
    sam, steps = trajectory.sam(), trajectory.steps
    optimizer, clipping = trajectory.optimizer(), trajectory.clipping()  # built once, not per step
    influence = np.zeros((problem.n, V_T.shape[1]))  # (n, k)
    U = np.array(V_T, dtype=np.float64)  # v_T, (d, k)
    ct_state = tuple(np.zeros_like(U) for _ in optimizer.state_names + sam.state_names)
    first = 0 if last_steps is None else max(0, steps - last_steps)
    for t in range(steps - 1, first - 1, -1):
        U, ct_state = _step(problem, trajectory, sam, optimizer, clipping, t).vjp(U, ct_state, influence)
        _progress(steps - t, steps, "adjoint", progress)
    return influence


class _Sources:
    """The terms a tangent recursion adds at each step for its own parameters (none by default), in place:
    into ġ (``g``), ŵ̇ (``w_hat``) and a perturbation's ġ̃_C (``descent``); ``step`` is the current step."""

    step: SAMStep

    def g(self, part: LinearisedPerturbation, dg: Array) -> None:
        pass

    def w_hat(self, part: LinearisedPerturbation, dw_hat: Array) -> None:
        pass

    def descent(self, part: LinearisedPerturbation, ddescent: Array) -> None:
        pass


class _WeightSources(_Sources):
    """d/dw_j: c_{t,j} ∇ℓ_j(θ_t) into ġ and c_{t,j} ∇ℓ_j(ŵ_t) into ġ̃_C, for j ∈ C (column j)."""

    def g(self, part: LinearisedPerturbation, dg: Array) -> None:
        scatter_add(dg.T, part.idx, part.at_theta.derivatives.per_sample_grads() / len(part.idx))

    def descent(self, part: LinearisedPerturbation, ddescent: Array) -> None:
        scatter_add(ddescent.T, part.idx, part.at_w_hat.derivatives.per_sample_grads() / len(part.idx))


class _HyperparameterSources(_Sources):
    """d/dρ (column 0), d/dλ (column 1: the optimizer's, added by its own JVP), d/dλ₂ (column 2) and d/ds
    (column 3, the lr scale: added after the optimizer's JVP, no source here): ∂ε/∂ρ = ε(θ_t; g_t) at
    ρ = 1 into ŵ̇ (for a ρ schedule: the schedule scaled with its peak, `SAM.d_rho`); θ_t into ġ and ŵ_C
    into ġ^p_C for λ₂."""

    def g(self, part: LinearisedPerturbation, dg: Array) -> None:
        dg[:, 2] += part.theta  # ∂g/∂λ₂ = θ_t

    def w_hat(self, part: LinearisedPerturbation, dw_hat: Array) -> None:
        dw_hat[:, 0] += part.sam.d_rho(part.theta, part.u)  # ∂ε/∂ρ = ε at ρ = 1 (the step's rule)

    def descent(self, part: LinearisedPerturbation, ddescent: Array) -> None:
        ddescent[:, 2] += part.w_hat  # ∂(λ₂ ŵ)/∂λ₂


def _tangents(problem: Problem, trajectory: Trajectory, width: int, sources: _Sources, progress: bool,
              label: str, dlam: Array | None = None, dlr_scale: Array | None = None) -> Array:
    """The tangent recursion through the recorded run for ``width`` parameters at once; Θ̇_T, (d, width).

    Each step is `SAMStep.jvp()`: per perturbation (``sources`` add each parameter's own terms)
        ġ  = K_t(θ_t) Θ̇ + [sources]
        ŵ̇  = Θ̇ + P_t ġ + S_t Θ̇ + [sources]
        ġ̃_C = K_t(ŵ_t) ŵ̇ + [sources]
    then the optimizer's tangent (its state's tangent carries over; ``dlam`` the tangent of its weight
    decay per column; ``dlr_scale`` per column the tangent of a scale s of the schedule, so η̇_t =
    η_t · dlr_scale). For SGD without momentum: Θ̇ ← Θ̇ − η_t (ġ̃ + λ_out Θ̇).
    """
    sam, steps = trajectory.sam(), trajectory.steps
    optimizer, clipping = trajectory.optimizer(), trajectory.clipping()  # built once, not per step
    dtheta = np.zeros((problem.d, width))  # Θ̇_0 = 0
    dstate = tuple(np.zeros_like(dtheta) for _ in optimizer.state_names + sam.state_names)
    for t in range(steps):
        step = _step(problem, trajectory, sam, optimizer, clipping, t)
        dlr = None if dlr_scale is None else float(trajectory.lrs[t]) * dlr_scale
        dtheta, dstate = step.jvp(dtheta, dstate, sources.g, sources.w_hat, sources.descent, dlam, dlr=dlr)
        _progress(t + 1, steps, label, progress)
    return dtheta


def _forward(problem: Problem, trajectory: Trajectory, progress: bool) -> Array:
    """Tangent recursion for all n training points at once (column j: dθ_t/dw_j, with
    `_WeightSources`); returns dθ_T/dw as (n, d)."""
    tangents = _tangents(problem, trajectory, problem.n, _WeightSources(), progress, "forward")  # (d, n)
    return np.ascontiguousarray(tangents.T)


# -- the approximations -------------------------------------------------------------------------------

def step_weights(trajectory: Trajectory) -> Array:
    """γ_t = Σ_{s ≥ t} η_s ∂step_s/∂d_t, the weight of step t's direction d_t in θ_0 − θ_T when every
    step Jacobian is the identity (what the first-order approximations keep), shape (T,).

        no momentum:  γ_t = η_t
        heavy ball:   γ_t = c_t Σ_{s≥t} η_s μ^{s−t}            (c_0 = 1, c_t = 1 − τ)
        Nesterov:     γ_t = η_t + μ c_t Σ_{s≥t} η_s μ^{s−t}
    """
    optimizer, lrs = trajectory.optimizer(), trajectory.lrs
    if not isinstance(optimizer, SGD):
        raise InvalidInputError(f"the first-order and TracIn weights are written for SGD runs, got "
                                f"{optimizer.name}")
    if trajectory.clipping() is not None:  # the clip's factor s_t and its Jacobian are not in γ_t
        raise InvalidInputError("the first-order and TracIn weights are written for unclipped runs; this run "
                                "clips its gradient: use an exact method (adjoint, forward, autodiff)")
    if not optimizer.momentum:
        return np.asarray(lrs.copy(), dtype=np.float64)
    mu, tail = optimizer.momentum, np.empty_like(lrs)
    running = 0.0
    for t in range(len(lrs) - 1, -1, -1):  # tail_t = η_t + μ tail_{t+1}
        running = lrs[t] + mu * running
        tail[t] = running
    c = np.array([optimizer.buffer_weight(t) for t in range(len(lrs))])
    return lrs + mu * c * tail if optimizer.nesterov else c * tail


def _approximation(problem: Problem, trajectory: Trajectory, X_test: Array, y_test: Any, method: str,
                   progress: bool, checkpoints: int | None = None, diagonal: bool = False) -> Array:
    """First-order and TracIn sums −Σ_t η_t c_{t,j} ∇ℓ_j(x_t)ᵀ ∇f(y_t) (module docstring); TracIn with
    ``checkpoints`` (see `trajectory_influence()`). ``diagonal``: the test set is the training set and
    only f = ℓ_j's term for j is wanted, shape (n,) (`trajectory_self_influence()`)."""
    at_w_hat = not method.endswith("_unperturbed")
    tracin = method.startswith("tracin")
    if checkpoints is not None:
        return _tracin_checkpoints(problem, trajectory, X_test, y_test, at_w_hat, checkpoints)
    steps = trajectory.steps
    weights = step_weights(trajectory)  # γ_t (η_t without momentum)
    influence = np.zeros(problem.n) if diagonal else np.zeros((problem.n, X_test.shape[0]))
    if not tracin:  # ∇f(θ_T), (d, m) (TracIn takes its test gradients at each checkpoint)
        test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test).T
    sam = trajectory.sam()
    for t in range(steps):
        idx = trajectory.batches[t]
        if at_w_hat and sam.m_sharpness is not None and len(idx) > sam.m_sharpness:
            parts = perturbations(problem, sam.at_step(t), trajectory.thetas[t], idx)  # each chunk's ŵ_C
            points = [(part.idx, part.w_hat) for part in parts]
        else:
            x_t = trajectory.thetas[t] + trajectory.epsilons[t] if at_w_hat else trajectory.thetas[t]
            points = [(idx, x_t)]
        for rows, x in points:
            if diagonal:  # ∇ℓ_j(x)ᵀ ∇ℓ_j(y) for j ∈ C only: y = x (TracIn) or θ_T, (|C|,)
                grads = problem.at(x, rows).per_sample_grads()  # (|C|, d)
                contribution = np.einsum("jk,jk->j", grads, grads if tracin else test_grads.T[rows])
            else:
                if tracin:  # the test gradient at the same checkpoint
                    test_grads = problem.model.per_sample_grads(x, X_test, y_test).T  # (d, m)
                contribution = problem.at(x, rows).jvp(test_grads)  # ∇ℓ_j(x)ᵀ ∇f, (|C|, m)
            scatter_add(influence, rows, -weights[t] / len(idx) * contribution)
        _progress(t + 1, steps, method, progress)
    return influence


def checkpoint_segments(steps: int, checkpoints: int) -> list[range]:
    """k consecutive segments of the steps 0 … T−1, lengths differing by at most one."""
    edges = np.linspace(0, steps, checkpoints + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _tracin_checkpoints(problem: Problem, trajectory: Trajectory, X_test: Array, y_test: Any,
                        at_w_hat: bool, checkpoints: int) -> Array:
    """TracInCP: −Σ_s ∇ℓ_j(x_{a_s})ᵀ ∇f(x_{a_s}) Σ_{t∈s} γ_t c_{t,j} over the segments s."""
    sam = trajectory.sam()
    if at_w_hat and sam.m_sharpness is not None:
        raise InvalidInputError("`checkpoints` with an m-sharpness run: each chunk has its own ŵ_t, so a "
                                "checkpoint is not one point; use method='tracin_unperturbed'")
    weights = step_weights(trajectory)
    influence = np.zeros((problem.n, X_test.shape[0]))
    for segment in checkpoint_segments(trajectory.steps, checkpoints):
        coefficient = np.zeros(problem.n)  # Σ_{t∈s} γ_t c_{t,j}
        for t in segment:
            idx = trajectory.batches[t]
            np.add.at(coefficient, idx, weights[t] / len(idx))
        a = segment.start
        x = trajectory.thetas[a] + trajectory.epsilons[a] if at_w_hat else trajectory.thetas[a]
        test_grads = problem.model.per_sample_grads(x, X_test, y_test).T  # ∇f(x), (d, m)
        influence -= coefficient[:, None] * problem.at(x).jvp(test_grads)
    return influence
