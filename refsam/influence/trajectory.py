"""Gradient-trajectory influence: the exact derivative of a recorded SAM run, and its approximations.

Conventions
-----------
* Influence of training point j on a scalar f: I_j(f) = ∂ f(θ_T(w)) / ∂ w_j at the weights the run was
  recorded with (``trajectory.weights``, all ones by default), holding fixed everything else the run
  used: θ_0, the batches B_t and the learning rates η_t. −I_j(f) predicts the change of f when j is
  removed (Δw_j = −1). Test functions are the per-sample test losses f_k(θ) = ℓ(z_k^test, θ);
  results have shape (n_train, n_test); the parameter target dθ_T/dw_j has shape (n_train, d).
* One step (`refsam.training.step`), F_t = F_{B_t,w}, H_t(·) = ∇²F_t (data term, weighted by
  w), c_{t,j} = 1[j ∈ B_t]/|B_t| (the derivative of w_j/|B_t|), (λ_in, λ_out) =
  ``problem.weight_decay_split()`` (λ_in = λ in coupled mode, λ_out = λ in decoupled mode, else 0):

      g_t = ∇F_t(θ_t) + λ_in θ_t       ε_t = ε(θ_t; g_t)       ŵ_t = θ_t + ε_t
      θ_{t+1} = θ_t − η_t [∇F_t(ŵ_t) + λ_in ŵ_t + λ_out θ_t]

  With P_t = ∂ε/∂g and S_t = ∂ε/∂θ|_g (ASAM's T term, zero for SAM and USAM) at (θ_t, g_t), and
  K_t(x) = H_t(x) + λ_in I:

      A_t     = ∂θ_{t+1}/∂θ_t = I − η_t [K_t(ŵ_t) (I + P_t K_t(θ_t) + S_t) + λ_out I]
      b_{t,j} = ∂θ_{t+1}/∂w_j = −η_t c_{t,j} [∇ℓ_j(ŵ_t) + K_t(ŵ_t) P_t ∇ℓ_j(θ_t)]

  (With E_t = P_t K_t(θ_t) + S_t this is A_t = I − η_t [K_t(ŵ_t)(I + E_t) + λ_out I], the step form of
  J = ∂G/∂θ; every product above is a batch derivative of ``problem.at(x, B_t)``.)
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
term); docs/trajectory.md derives the recursions and measures the approximations against the exact
result and against leave-one-out replays.
"""


from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError, check_finite_result
from ..models import BatchDerivatives
from ..objective import Problem, decay_times
from ..sam import SAM
from ..tolerances import CANCEL_WARN
from ..training import Trajectory, sharpness_chunks
from ..validation import check_positive_int
from .autodiff import autodiff_through_training
from .closed_form import HyperparameterSensitivity
from .methods import TRAJECTORY_APPROXIMATIONS, TRAJECTORY_EXACT, TRAJECTORY_METHODS

__all__ = [
    "APPROXIMATE_METHODS",
    "EXACT_METHODS",
    "METHODS",
    "PARAMETER_METHODS",
    "check_run",
    "step_weights",
    "trajectory_hyperparameter_sensitivity",
    "trajectory_influence",
    "trajectory_parameter_influence",
]

EXACT_METHODS = TRAJECTORY_EXACT  # ("adjoint", "forward", "autodiff"), from the method table
APPROXIMATE_METHODS = TRAJECTORY_APPROXIMATIONS
METHODS = TRAJECTORY_METHODS
PARAMETER_METHODS = EXACT_METHODS

Array = NDArray[np.float64]


# -- public API --------------------------------------------------------------------------------------

def trajectory_influence(problem: Problem, trajectory: Trajectory, X_test: ArrayLike, y_test: ArrayLike,
                         method: str = "adjoint", progress: bool = False, *, last_steps: int | None = None,
                         checkpoints: int | None = None) -> Array:
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
        One of `METHODS` (see the module docstring): "adjoint" (default, exact, fastest),
        "forward" and "autodiff" (exact cross-checks), or an approximation: "first_order",
        "first_order_unperturbed", "tracin", "tracin_unperturbed".
    progress : bool
        Print progress to stderr every 10% of the steps.
    last_steps : int, optional
        With "adjoint": run the reverse recursion over the last K = ``last_steps`` steps only, the
        truncated adjoint I_j ≈ Σ_{t ≥ T−K} v_{t+1}ᵀ b_{t,j} (an approximation; K ≥ T is the exact one).
    checkpoints : int, optional
        With the TracIn methods: k checkpoints instead of every step (TracInCP). The T steps are cut into
        k consecutive segments of (nearly) equal length; segment s, steps [a_s, b_s), is represented by
        the checkpoint at its first step:  I_j ≈ −Σ_s ∇ℓ_j(x_{a_s})ᵀ ∇f(x_{a_s}) Σ_{t∈s} γ_t c_{t,j},
        x = ŵ (or θ for "tracin_unperturbed"). k = T is the per-step TracIn.

    Returns
    -------
    array (n_train, n_test)

    Notes
    -----
    Cost: "adjoint" ≈ 2 HVPs + 2 batch JVPs per step for all m test functions at once
    (≤ 3× the training run, benchmarks/adjoint_vs_training.py); "forward" the same with n directions;
    the approximations one batch JVP per step (TracIn also m test gradients per step).
    """
    method = _check_method(method, METHODS)
    problem = check_run(problem, trajectory)
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
    result: Array
    if method == "autodiff":
        result = autodiff_through_training(problem, trajectory,
                                           lambda theta: problem.model.losses(theta, X_test, y_test))
    elif method in APPROXIMATE_METHODS:
        result = _approximation(problem, trajectory, X_test, y_test, method, progress, checkpoints)
    else:
        test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test).T  # (d, m)
        if method == "adjoint":
            result = _adjoint(problem, trajectory, test_grads, progress, last_steps)
        else:
            result = _forward(problem, trajectory, progress) @ test_grads  # (n, d) @ (d, m)
    return check_finite_result(f"trajectory_influence(method={method!r})", result)


def trajectory_parameter_influence(problem: Problem, trajectory: Trajectory, method: str = "adjoint",
                                   progress: bool = False) -> Array:
    """dθ_T/dw_j through the recorded run, shape (n_train, d) (row j).

    ``method`` is "adjoint" (d adjoint vectors, one per coordinate of θ_T: a (d, d) block), "forward"
    (n tangents: a (d, n) block — the cheaper choice when n < d) or "autodiff"; all three are exact.
    Other arguments as `trajectory_influence()`.
    """
    method = _check_method(method, PARAMETER_METHODS)
    problem = check_run(problem, trajectory)
    if method == "autodiff":
        result = autodiff_through_training(problem, trajectory, lambda theta: theta)
    elif method == "adjoint":
        result = _adjoint(problem, trajectory, np.eye(problem.d), progress)  # coordinates of θ_T
    else:
        result = _forward(problem, trajectory, progress)
    return check_finite_result(f"trajectory_parameter_influence(method={method!r})", result)


def trajectory_hyperparameter_sensitivity(problem: Problem, trajectory: Trajectory,
                                          progress: bool = False) -> HyperparameterSensitivity:
    """dθ_T/dρ and dθ_T/dλ through the recorded run, each shape (d,): the run's own hypergradients.

    The same run (θ_0, batches B_t, η_t, rule, momentum) re-run at ρ + dρ or λ + dλ; exact for any batch
    schedule, converged or not — where the closed form (`hyperparameter_sensitivity()`)
    needs a root. Two tangent columns of the forward recursion (`_forward()`), started at Θ̇_0 = 0,
    with the hyper-parameters' own terms added at every step:

        ġ  = K_t(θ_t) Θ̇ + [θ_t in the λ column, coupled mode]             (g = ∇F + λ_in θ)
        ŵ̇  = Θ̇ + P_t ġ + S_t Θ̇ + [∂ε/∂ρ = ε(θ_t; g_t)|_{ρ=1} in the ρ column]
        ḋ  = K_t(ŵ_t) ŵ̇ + λ_out Θ̇ + [λ column: ŵ_t coupled, θ_t decoupled]

    then the optimizer's tangent, Θ̇ ← Θ̇ − η_t ḋ (`_tangents()`, the recursion `_forward()` runs).
    A validation loss f(θ_T) has the hypergradients ∇f(θ_T)ᵀ d_rho and ∇f(θ_T)ᵀ d_weight_decay. Cost:
    about 2 Hessian-vector products per step per column. Needs a scalar λ (one derivative for one number).
    """
    problem = check_run(problem, trajectory)
    if problem.per_coordinate_decay:
        raise InvalidInputError("trajectory_hyperparameter_sensitivity differentiates with respect to one "
                                "scalar λ; `problem` has a per-coordinate weight decay")
    dtheta = _tangents(problem, trajectory, 2, _HyperparameterSources(problem, trajectory.sam()), progress,
                       "hyper-parameter tangents")
    dtheta = check_finite_result("trajectory_hyperparameter_sensitivity", dtheta)
    return HyperparameterSensitivity(d_rho=dtheta[:, 0].copy(), d_weight_decay=dtheta[:, 1].copy())


# -- validation ---------------------------------------------------------------------------------------

def _check_method(method: object, allowed: tuple[str, ...]) -> str:
    name = method.replace("-", "_") if isinstance(method, str) else method
    if name not in allowed:
        raise InvalidInputError(f"`method` must be one of {list(allowed)}, got {method!r}")
    return str(name)


def check_run(problem: object, trajectory: object) -> Problem:
    """Check that ``trajectory`` was recorded on ``problem`` and return the problem at the run's
    weights (where every trajectory derivative is taken)."""
    if not isinstance(problem, Problem):
        raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if not isinstance(trajectory, Trajectory):
        raise InvalidInputError(f"`trajectory` must be a refsam.Trajectory, got {type(trajectory).__name__}")
    trajectory.check_problem(problem)
    if trajectory.steps == 0:
        raise InvalidInputError("`trajectory` must have at least one step, got 0")
    return problem.with_weights(trajectory.weights)


def _progress(t_done: int, steps: int, what: str, enabled: bool) -> None:
    if enabled and (t_done % max(1, steps // 10) == 0 or t_done == steps):
        print(f"  {what}: step {t_done}/{steps}", file=sys.stderr, flush=True)


# -- one step's linearisation ---------------------------------------------------------------------------

class _Chunk:
    """One perturbation of step t (the whole batch, or one m-sharpness chunk C): the derivatives of F_C at
    θ_t and at ŵ_C, the gradient g_C the perturbation is built from, and products with P_C, S_C."""

    def __init__(self, problem: Problem, sam: SAM, theta: Array, idx: NDArray[np.int64], share: float,
                 w_hat: Array | None, lam_in: float | Array, g: Array | None = None) -> None:
        self.sam, self.theta, self.idx, self.share = sam, theta, idx, share  # share = |C|/|B|
        self.inv_size = 1.0 / len(idx)  # c_{t,j} within the chunk: ∂(w_j/|C|)/∂w_j
        rows, y_C, c = problem.coefficients(idx)  # the chunk's rows of the design, once for both points
        self.at_theta: BatchDerivatives = problem.model.derivatives(theta, rows, y_C, c)
        self.g = self.at_theta.grad() + lam_in * theta if g is None else g  # g_C
        self.c, self.lam_in = c, lam_in
        self.w_hat = theta + sam.perturbation(theta, self.g) if w_hat is None else w_hat  # ŵ_C
        self.at_w_hat: BatchDerivatives = problem.model.derivatives(self.w_hat, rows, y_C, c)

    def warn_if_cancelled(self) -> None:
        """The exact methods differentiate ε = ρ Tg/‖Tg‖: warn if g_C is round-off-level cancellation."""
        if self.sam.rule != "usam" and self.sam.rho > 0.0:
            _warn_if_cancelled(self.theta, self.g, self.at_theta, self.c, self.lam_in, self.sam.norm_eps)

    def P(self, V: Array) -> Array:
        """P_C V = (∂ε/∂g) V, (d, k); P is symmetric, so this is also Pᵀ V."""
        return self.sam.jvp_g(self.theta, self.g, V)

    def S(self, V: Array) -> Array:
        """S_C V = (∂ε/∂θ|_g) V, (d, k)."""
        return self.sam.jvp_theta(self.theta, self.g, V)

    def S_T(self, V: Array) -> Array:
        """S_Cᵀ V, (d, k)."""
        return self.sam.vjp_theta(self.theta, self.g, V)

    def scaled(self, V: Array) -> Array:
        """share · V (exactly V for a single chunk)."""
        return V if self.share == 1.0 else self.share * V


def _warn_if_cancelled(theta: Array, g: Array, at_theta: BatchDerivatives, c: Array,
                       lam_in: float | Array, norm_eps: float = 0.0) -> None:
    """Warn when g is round-off-level cancellation of its terms (tolerances.CANCEL_WARN): ε = ρ Tg/(‖Tg‖ + e)
    then points in a direction set by rounding, which the exact derivatives amplify by ‖terms‖/(‖g‖ + e).
    The size of the terms is Σ_i |c_i| ‖∇ℓ_i‖ + ‖λθ‖ (the rounding error of g is ~eps times it; T
    scales coordinates after the sum, so the ratio is judged on g). A denominator e = norm_eps protects
    only if it is large against that rounding: the public implementations' e = 1e-12 or 1e-16 does not
    (found by the fuzz suite: 16% disagreement at ‖g‖ ≈ e = 1e-16). Cost: O(|B| d), no (|B|, d) array."""
    size = float(np.abs(c) @ at_theta.per_sample_grad_norms()) + float(scipy.linalg.norm(lam_in * theta))
    if not 0.0 < size < np.inf:
        return
    ratio = (float(scipy.linalg.norm(g)) + norm_eps) / size  # BLAS nrm2: no overflow or underflow
    if ratio < CANCEL_WARN:
        warnings.warn(f"a step's perturbation gradient is {ratio:.1e} of the size of the per-sample terms it "
                      f"sums (cancellation): ε's direction is set by rounding there, and the exact methods "
                      f"can disagree with each other and with autodiff. Use rule='usam', norm_eps well above "
                      f"{CANCEL_WARN:g} x the per-sample gradients, or avoid steps where the batch gradient "
                      f"nearly vanishes.", RuntimeWarning, stacklevel=6)


class _Step:
    """Everything about step t that the recursions need, with products for (d, k) blocks of vectors.

    Built from the stored θ_t (and ε_t without m-sharpness). P_t needs g_t: rebuilt from what the run
    stored where that suffices (`_stored_gradient()`: SAM with ‖g_t‖, USAM), else recomputed (one
    batch gradient). ``chunks`` are its perturbations: the whole batch, or with m-sharpness one
    `_Chunk` per chunk of m samples (their ε recomputed from θ_t exactly as training did).
    """

    def __init__(self, problem: Problem, trajectory: Trajectory, sam: SAM, t: int,
                 exact: bool = True) -> None:
        self.idx = trajectory.batches[t]  # B_t
        self.lr = float(trajectory.lrs[t])  # η_t
        self.theta = trajectory.thetas[t]  # θ_t
        self.lam_in, self.lam_out = problem.weight_decay_split()
        self.inv_batch = 1.0 / len(self.idx)  # c_{t,j} for j ∈ B_t
        parts = sharpness_chunks(self.idx, sam.m_sharpness)
        if len(parts) == 1:  # one perturbation: ŵ_t = θ_t + ε_t as recorded
            self.chunks = [_Chunk(problem, sam, self.theta, self.idx, 1.0,
                                  self.theta + trajectory.epsilons[t], self.lam_in,
                                  _stored_gradient(trajectory, sam, t))]
        else:
            self.chunks = [_Chunk(problem, sam, self.theta, part, len(part) / len(self.idx), None,
                                  self.lam_in) for part in parts]
        if exact:  # the approximations use only the chunks' ŵ: no derivative of ε, nothing to warn of
            for chunk in self.chunks:
                chunk.warn_if_cancelled()


def _stored_gradient(trajectory: Trajectory, sam: SAM, t: int) -> Array | None:
    """g_t from the recorded ε_t where the rule lets it be inverted (None: recompute it):

        SAM   ε = ρ g/(‖g‖ + e)   ⇒   g = (ε/ρ)(‖g‖ + e)   with the stored ‖g_t‖ (``grad_norms``)
        USAM  ε = ρ g             ⇒   g = ε/ρ

    (ε/ρ first: its entries are at most 1 in size for SAM, so the product cannot overflow where g did not.)
    Equal to the recomputed g_t to rounding (≤ 4 eps per entry, relative to ‖g_t‖; tested). ASAM's
    ε = ρ T²g/‖Tg‖ is not inverted (T = diag(|θ| + κ) is singular at κ = 0), nor ρ = 0 (ε = 0 carries
    nothing). For steps with one perturbation only (an m-sharpness step has one ε per chunk)."""
    if sam.rho == 0.0:
        return None
    unit = trajectory.epsilons[t] / sam.rho
    if sam.rule == "usam":
        return unit
    if sam.rule == "sam" and trajectory.grad_norms is not None:
        return unit * (float(trajectory.grad_norms[t]) + sam.norm_eps)
    return None


# -- the exact recursions ---------------------------------------------------------------------------

def _adjoint(problem: Problem, trajectory: Trajectory, V_T: Array, progress: bool,
             last_steps: int | None = None) -> Array:
    """Reverse recursion for the k functions whose gradients at θ_T are the columns of V_T (d, k).

    Returns I (n, k) with I[j, :] = Σ_t D_tᵀ β_{t,j}, β_{t,j} = ∂d_t/∂w_j, where D_t is the adjoint of
    step t's direction d_t. With U = v_{t+1} (the adjoint of θ_{t+1}) and, under momentum, a_t (the
    adjoint of buf_t carried back from step t+1; a_{T−1} = 0):

        no momentum:   D_t = −η_t U
        heavy ball:    b̄ = a_t − η_t U,        D_t = c_t b̄                    a_{t−1} = μ b̄
        Nesterov:      b̄ = a_t − η_t μ U,      D_t = c_t b̄ − η_t U           a_{t−1} = μ b̄
                       (c_0 = 1, c_t = 1 − τ: the factor of d_t in buf_t)
    and then, with M_t = ∂d_t/∂θ_t (so A_t = I − η_t M_t without momentum):
        Q   = K_t(ŵ_t) D_t                                   (the shared HVP at ŵ_t)
        PQ  = P_t Q
        I_j += c_{t,j} [∇ℓ_j(ŵ_t)ᵀ D_t + ∇ℓ_j(θ_t)ᵀ PQ]         (uses K and P symmetric)
        v_t = U + M_tᵀ D_t = U + Q + K_t(θ_t) PQ + S_tᵀ Q + λ_out D_t

    ``last_steps`` = K stops after the K last steps (the truncated adjoint; None: all of them).
    """
    sam, optimizer = trajectory.sam(), trajectory.optimizer()
    mu, nesterov = optimizer.momentum, optimizer.nesterov
    steps = trajectory.steps
    influence = np.zeros((problem.n, V_T.shape[1]))  # (n, k)
    U = np.array(V_T, dtype=np.float64)  # v_T, (d, k)
    buffer_adjoint = np.zeros_like(U)  # a_{T−1} = 0: f depends on θ_T only
    first = 0 if last_steps is None else max(0, steps - last_steps)
    for t in range(steps - 1, first - 1, -1):
        step = _Step(problem, trajectory, sam, t)
        if optimizer.active:
            b_bar = buffer_adjoint - step.lr * (mu if nesterov else 1.0) * U
            D = optimizer.buffer_weight(t) * b_bar - (step.lr * U if nesterov else 0.0)
            buffer_adjoint = mu * b_bar
        else:
            D = -step.lr * U
        MtD = decay_times(step.lam_out, D)  # M_tᵀ D, accumulated over the step's perturbations
        for chunk in step.chunks:
            HD, J_w_hat_D = chunk.at_w_hat.hvp_and_jvp(D)
            Q = HD + decay_times(step.lam_in, D)  # K_C(ŵ_C) D
            PQ = chunk.P(Q)
            HPQ, J_theta_PQ = chunk.at_theta.hvp_and_jvp(PQ)
            _scatter_add(influence, chunk.idx, step.inv_batch * (J_w_hat_D + J_theta_PQ))
            MtD = MtD + chunk.scaled(Q + HPQ + decay_times(step.lam_in, PQ) + chunk.S_T(Q))
        U = U + MtD
        _progress(steps - t, steps, "adjoint", progress)
    return influence


class _Sources:
    """The terms a tangent recursion adds at each step for its own parameters (none by default): into
    ġ (``g``), ŵ̇ (``w_hat``), a perturbation's ḋ (``direction``) and the step's ḋ (``descent``), in place."""

    def g(self, step: _Step, chunk: _Chunk, dg: Array) -> None:
        pass

    def w_hat(self, step: _Step, chunk: _Chunk, dw_hat: Array) -> None:
        pass

    def direction(self, step: _Step, chunk: _Chunk, part: Array) -> None:
        pass

    def descent(self, step: _Step, descent: Array) -> None:
        pass


class _WeightSources(_Sources):
    """d/dw_j: c_{t,j} ∇ℓ_j(θ_t) into ġ and c_{t,j} ∇ℓ_j(ŵ_t) into ḋ, for j ∈ B_t (column j)."""

    def g(self, step: _Step, chunk: _Chunk, dg: Array) -> None:
        _scatter_add(dg.T, chunk.idx, chunk.inv_size * chunk.at_theta.per_sample_grads())

    def direction(self, step: _Step, chunk: _Chunk, part: Array) -> None:
        _scatter_add(part.T, chunk.idx, chunk.inv_size * chunk.at_w_hat.per_sample_grads())


class _HyperparameterSources(_Sources):
    """d/dρ (column 0) and d/dλ (column 1): ∂ε/∂ρ = ε(θ_t; g_t) at ρ = 1 into ŵ̇; λ's terms into ġ and
    ḋ — θ_t into ġ and ŵ_C into ḋ in coupled mode, θ_t into the step's ḋ in decoupled mode."""

    def __init__(self, problem: Problem, sam: SAM) -> None:
        self.coupled = problem.regularization == "coupled"
        self.unit_rho = SAM(1.0, sam.rule, sam.kappa, sam.norm_eps, sam.t_mask)  # every rule is linear in ρ

    def g(self, step: _Step, chunk: _Chunk, dg: Array) -> None:
        if self.coupled:
            dg[:, 1] += step.theta  # ∂g/∂λ = θ_t

    def w_hat(self, step: _Step, chunk: _Chunk, dw_hat: Array) -> None:
        dw_hat[:, 0] += self.unit_rho.perturbation(step.theta, chunk.g)  # ∂ε/∂ρ

    def direction(self, step: _Step, chunk: _Chunk, part: Array) -> None:
        if self.coupled:
            part[:, 1] += chunk.w_hat  # ∂(λ ŵ)/∂λ

    def descent(self, step: _Step, descent: Array) -> None:
        if not self.coupled:
            descent[:, 1] += step.theta  # ∂(λ θ_t)/∂λ


def _tangents(problem: Problem, trajectory: Trajectory, width: int, sources: _Sources, progress: bool,
              label: str) -> Array:
    """The tangent recursion through the recorded run for ``width`` parameters at once; Θ̇_T, (d, width).

    Per step, the tangent ḋ of the direction d_t (``sources`` add each parameter's own terms):
        ġ  = K_t(θ_t) Θ̇ + [sources]                    (tangent of g_t)
        ŵ̇  = Θ̇ + P_t ġ + S_t Θ̇ + [sources]             (tangent of ŵ_t)
        ḋ  = K_t(ŵ_t) ŵ̇ + λ_out Θ̇ + [sources]
    then the optimizer's tangent (the buffer's tangent ḃ carries over):
        no momentum:  Θ̇ ← Θ̇ − η_t ḋ
        momentum:     ḃ ← ḋ (t = 0) or μ ḃ + (1 − τ) ḋ;   Θ̇ ← Θ̇ − η_t (ḋ + μ ḃ  Nesterov,  ḃ  heavy ball)
    """
    sam, optimizer = trajectory.sam(), trajectory.optimizer()
    steps = trajectory.steps
    dtheta = np.zeros((problem.d, width))  # Θ̇_0 = 0
    dbuf: Array | None = None
    for t in range(steps):
        step = _Step(problem, trajectory, sam, t)
        descent = decay_times(step.lam_out, dtheta)  # ḋ, accumulated over the step's perturbations
        sources.descent(step, descent)
        for chunk in step.chunks:
            dg = chunk.at_theta.hvp(dtheta) + decay_times(step.lam_in, dtheta)  # K_C(θ_t) Θ̇
            sources.g(step, chunk, dg)
            dw_hat = dtheta + chunk.P(dg) + chunk.S(dtheta)
            sources.w_hat(step, chunk, dw_hat)
            part = chunk.at_w_hat.hvp(dw_hat) + decay_times(step.lam_in, dw_hat)
            sources.direction(step, chunk, part)
            descent = descent + chunk.scaled(part)
        if optimizer.active:
            dbuf, descent = optimizer.update(dbuf, descent, t)  # the same linear map on tangents
        dtheta = dtheta - step.lr * descent
        _progress(t + 1, steps, label, progress)
    return dtheta


def _forward(problem: Problem, trajectory: Trajectory, progress: bool) -> Array:
    """Tangent recursion for all n training points at once (column j: dθ_t/dw_j, with
    `_WeightSources`); returns dθ_T/dw as (n, d)."""
    return _tangents(problem, trajectory, problem.n, _WeightSources(), progress, "forward").T


def _scatter_add(target: Array, rows: NDArray[np.int64], values: Array) -> None:
    """target[rows] += values, row by row; a repeated row (an external batch drawn with replacement)
    receives each of its contributions (np.add.at), distinct rows take one fancy-indexed add."""
    if len(rows) > 1 and np.unique(rows).size < len(rows):
        np.add.at(target, rows, values)
    else:
        target[rows] += values


# -- the approximations -------------------------------------------------------------------------------

def step_weights(trajectory: Trajectory) -> Array:
    """γ_t = Σ_{s ≥ t} η_s ∂step_s/∂d_t, the weight of step t's direction d_t in θ_0 − θ_T when every
    step Jacobian is the identity (what the first-order approximations keep), shape (T,).

        no momentum:  γ_t = η_t
        heavy ball:   γ_t = c_t Σ_{s≥t} η_s μ^{s−t}            (c_0 = 1, c_t = 1 − τ)
        Nesterov:     γ_t = η_t + μ c_t Σ_{s≥t} η_s μ^{s−t}
    """
    optimizer, lrs = trajectory.optimizer(), trajectory.lrs
    if not optimizer.active:
        return lrs.copy()
    mu, tail = optimizer.momentum, np.empty_like(lrs)
    running = 0.0
    for t in range(len(lrs) - 1, -1, -1):  # tail_t = η_t + μ tail_{t+1}
        running = lrs[t] + mu * running
        tail[t] = running
    c = np.array([optimizer.buffer_weight(t) for t in range(len(lrs))])
    return lrs + mu * c * tail if optimizer.nesterov else c * tail


def _approximation(problem: Problem, trajectory: Trajectory, X_test: Array, y_test: Any, method: str,
                   progress: bool, checkpoints: int | None = None) -> Array:
    """First-order and TracIn sums −Σ_t η_t c_{t,j} ∇ℓ_j(x_t)ᵀ ∇f(y_t) (module docstring); TracIn with
    ``checkpoints`` (see `trajectory_influence()`)."""
    at_w_hat = not method.endswith("_unperturbed")
    tracin = method.startswith("tracin")
    if checkpoints is not None:
        return _tracin_checkpoints(problem, trajectory, X_test, y_test, at_w_hat, checkpoints)
    steps = trajectory.steps
    weights = step_weights(trajectory)  # γ_t (η_t without momentum)
    influence = np.zeros((problem.n, X_test.shape[0]))
    test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test).T  # ∇f(θ_T), (d, m)
    sam = trajectory.sam()
    for t in range(steps):
        idx = trajectory.batches[t]
        if at_w_hat and sam.m_sharpness is not None and len(idx) > sam.m_sharpness:
            step = _Step(problem, trajectory, sam, t, exact=False)
            points = [(chunk.idx, chunk.w_hat) for chunk in step.chunks]
        else:
            x_t = trajectory.thetas[t] + trajectory.epsilons[t] if at_w_hat else trajectory.thetas[t]
            points = [(idx, x_t)]
        for rows, x in points:
            if tracin:  # the test gradient at the same checkpoint
                test_grads = problem.model.per_sample_grads(x, X_test, y_test).T  # (d, m)
            contribution = problem.at(x, rows).jvp(test_grads)  # ∇ℓ_j(x)ᵀ ∇f, (|C|, m)
            _scatter_add(influence, rows, -weights[t] / len(idx) * contribution)
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
