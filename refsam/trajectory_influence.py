"""Gradient-trajectory influence: the exact derivative of a recorded SAM run (SPEC §4).

Conventions
-----------
* Influence of training point j on a scalar f: I_j(f) = ∂ f(θ_T(w)) / ∂ w_j at the weights the run was
  recorded with (``trajectory.weights``, all ones by default), holding fixed everything else the run
  used: θ_0, the batches B_t and the learning rates η_t. −I_j(f) predicts the change of f when j is
  removed (Δw_j = −1). Test functions are the per-sample test losses f_k(θ) = ℓ(z_k^test, θ);
  results have shape (n_train, n_test); the parameter target dθ_T/dw_j has shape (n_train, d).
* One step (refsam.training), F_t = F_{B_t,w}, H_t(·) = ∇²F_t (data term, weighted by w),
  c_{t,j} = 1[j ∈ B_t]/|B_t| (the derivative of w_j/|B_t|), λ_in = λ in coupled mode and 0 in
  decoupled mode, λ_out = λ in decoupled mode and 0 in coupled mode:

      g_t = ∇F_t(θ_t) + λ_in θ_t       ε_t = ε(θ_t; g_t)       ŵ_t = θ_t + ε_t
      θ_{t+1} = θ_t − η_t [∇F_t(ŵ_t) + λ_in ŵ_t + λ_out θ_t]

  With P_t = ∂ε/∂g and S_t = ∂ε/∂θ|_g (ASAM's T term, zero for SAM and USAM) at (θ_t, g_t), and
  K_t(x) = H_t(x) + λ_in I:

      A_t     = ∂θ_{t+1}/∂θ_t = I − η_t [K_t(ŵ_t) (I + P_t K_t(θ_t) + S_t) + λ_out I]
      b_{t,j} = ∂θ_{t+1}/∂w_j = −η_t c_{t,j} [∇ℓ_j(ŵ_t) + K_t(ŵ_t) P_t ∇ℓ_j(θ_t)]

  (SPEC §4 writes E_t = P_t K_t(θ_t); the S_t term is its ASAM extension.)
* Methods (``method=``; hyphens are accepted for underscores, "first-order" = "first_order"):

      "adjoint"   reverse recursion, exact:  v_T = ∇f(θ_T);  for t = T−1 … 0:
                      I_j += v_{t+1}ᵀ b_{t,j};   v_t = A_tᵀ v_{t+1}
                  Per step: 2 batch Hessian-vector products, 2 batch Jacobian-vector products, one
                  batch gradient (to rebuild g_t), O(d) SAM-rule products. No d×d matrix; memory is the
                  trajectory plus O(n + d) per test function. All test functions run together.
      "forward"   tangent recursion, exact:  D_0 = 0, D_{t+1} = A_t D_t + b_t, dθ_T/dw = D_T (d, n):
                  n tangents at once; a cross-check of the adjoint (it applies A_t, not A_tᵀ).
      "autodiff"  autograd through a re-implementation of the training loop written with
                  Problem.objective and SAM.perturbation only: independent of every formula above.
                  Slow (O(T) tape, one reverse pass per test function); for tests.
      "first_order"              A_t ≈ I and the inner term K P ∇ℓ_j(θ_t) dropped, test gradient at θ_T:
                                     I_j ≈ −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(θ_T)
      "first_order_unperturbed"  the same with ∇ℓ_j(θ_t) in place of ∇ℓ_j(ŵ_t)
      "tracin"                   TracIn: like first_order but the test gradient is taken at the same
                                 checkpoint as the training gradient:  −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(ŵ_t)
      "tracin_unperturbed"       −Σ_t η_t c_{t,j} ∇ℓ_j(θ_t)ᵀ ∇f(θ_t)

When each is exact: the three exact methods are the derivative of the run itself, for any batch
schedule, any number of steps, converged or not, in both regularisation modes (they need ‖g_t‖ ≠ 0 at
every step for the SAM and ASAM rules, as training does). The approximations are exact only in special
cases (first_order_unperturbed with ρ = 0, λ = 0 and a linear model, say); docs/trajectory.md derives
the recursions and measures the approximations against the exact result and leave-one-out replays.
"""

from __future__ import annotations

import sys

import autograd.numpy as anp
import numpy as np
from autograd import grad as _ag_grad
from autograd import jacobian as _ag_jacobian
from scipy.special import expit

from .models import LogisticRegression, SoftmaxRegression, _augment
from .objective import Problem
from .training import Trajectory

EXACT_METHODS = ("adjoint", "forward", "autodiff")
APPROXIMATE_METHODS = ("first_order", "first_order_unperturbed", "tracin", "tracin_unperturbed")
METHODS = EXACT_METHODS + APPROXIMATE_METHODS
PARAMETER_METHODS = EXACT_METHODS


# -- public API --------------------------------------------------------------------------------------

def trajectory_influence(problem: Problem, trajectory: Trajectory, X_test, y_test, method: str = "adjoint",
                         progress: bool = False) -> np.ndarray:
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
    X_test : array (m, p); y_test : int array (m,)
        The test points whose losses are the functions f_k.
    method : one of :data:`METHODS` (see the module docstring)
        "adjoint" (default, exact, fastest), "forward" and "autodiff" (exact cross-checks), or an
        approximation: "first_order", "first_order_unperturbed", "tracin", "tracin_unperturbed".
    progress : bool
        Print progress to stderr every 10% of the steps.

    Cost: "adjoint" ≈ 2 HVPs + 2 batch JVPs + 1 gradient per step for all m test functions at once;
    "forward" the same with n directions; the approximations ≈ 2 gradients per step.
    """
    method = _check_method(method, METHODS)
    problem = _check_run(problem, trajectory)
    X_test, y_test = _check_test(problem, X_test, y_test)
    theta_T = trajectory.theta_final
    if method == "autodiff":
        return _autodiff(problem, trajectory, lambda theta: problem.model.losses(theta, X_test, y_test))
    if method in APPROXIMATE_METHODS:
        return _approximation(problem, trajectory, X_test, y_test, method, progress)
    test_grads = problem.model.per_sample_grads(theta_T, X_test, y_test).T  # ∇f_k(θ_T), (d, m)
    if method == "adjoint":
        return _adjoint(problem, trajectory, test_grads, progress)
    return _forward(problem, trajectory, progress) @ test_grads  # (n, d) @ (d, m)


def trajectory_parameter_influence(problem: Problem, trajectory: Trajectory, method: str = "adjoint",
                                   progress: bool = False) -> np.ndarray:
    """dθ_T/dw_j through the recorded run, shape (n_train, d) (row j).

    ``method`` is "adjoint" (d adjoint vectors, one per coordinate of θ_T), "forward" (n tangents) or
    "autodiff"; all three are exact. Other arguments as :func:`trajectory_influence`.
    """
    method = _check_method(method, PARAMETER_METHODS)
    problem = _check_run(problem, trajectory)
    if method == "autodiff":
        return _autodiff(problem, trajectory, lambda theta: theta)
    if method == "adjoint":
        return _adjoint(problem, trajectory, np.eye(problem.d), progress)  # coordinates of θ_T
    return _forward(problem, trajectory, progress)


# -- validation ---------------------------------------------------------------------------------------

def _check_method(method, allowed) -> str:
    name = method.replace("-", "_") if isinstance(method, str) else method
    if name not in allowed:
        raise ValueError(f"`method` must be one of {list(allowed)}, got {method!r}")
    return name


def _check_run(problem, trajectory) -> Problem:
    """Check the pair and return the problem at the run's weights (where the derivative is taken)."""
    if not isinstance(problem, Problem):
        raise ValueError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if not isinstance(trajectory, Trajectory):
        raise ValueError(f"`trajectory` must be a refsam.Trajectory, got {type(trajectory).__name__}")
    trajectory.check_problem(problem)
    if trajectory.steps == 0:
        raise ValueError("`trajectory` must have at least one step, got 0")
    return problem.with_weights(trajectory.weights)


def _check_test(problem, X_test, y_test):
    X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    if X_test.shape[1] != problem.p or X_test.shape[0] == 0:
        raise ValueError(
            f"`X_test` must have shape (m >= 1, {problem.p}) like the training data, got {X_test.shape}"
        )
    return X_test, y_test


def _progress(t_done: int, steps: int, what: str, enabled: bool) -> None:
    if enabled and (t_done % max(1, steps // 10) == 0 or t_done == steps):
        print(f"  {what}: step {t_done}/{steps}", file=sys.stderr, flush=True)


# -- one step's linearisation ---------------------------------------------------------------------------

class _Step:
    """Everything about step t that the recursions need, with products for (d, k) blocks of vectors.

    Built from the stored θ_t, ε_t; g_t is recomputed (one batch gradient) because P_t depends on ‖g_t‖.
    """

    def __init__(self, problem: Problem, sam, trajectory: Trajectory, t: int):
        self.problem, self.sam = problem, sam
        self.idx = trajectory.batches[t]  # B_t
        self.lr = trajectory.lrs[t]  # η_t
        self.theta = trajectory.thetas[t]  # θ_t
        self.theta_perturbed = self.theta + trajectory.epsilons[t]  # ŵ_t
        lam = problem.weight_decay
        coupled = problem.regularization == "coupled"
        self.lam_in, self.lam_out = (lam, 0.0) if coupled else (0.0, lam)
        self.g = problem.grad(self.theta, self.idx) + self.lam_in * self.theta  # g_t
        self.X_B, self.y_B = problem.X[self.idx], problem.y[self.idx]
        self.hessian_coef = problem.weights[self.idx] / len(self.idx)  # w_i/|B_t|, (|B|,)
        self.inv_batch = 1.0 / len(self.idx)  # c_{t,j} for j ∈ B_t

    def K(self, x, V):
        """K_t(x) V = (H_t(x) + λ_in I) V, (d, k)."""
        return _hvp_block(self.problem.model, x, self.X_B, self.y_B, self.hessian_coef, V) + self.lam_in * V

    def P(self, V):
        """P_t V = (∂ε/∂g) V, (d, k); P_t is symmetric, so this is also P_tᵀ V."""
        return _columns(lambda v: self.sam.jvp_g(self.theta, self.g, v), V)

    def S(self, V):
        """S_t V = (∂ε/∂θ|_g) V, (d, k)."""
        return _columns(lambda v: self.sam.jvp_theta(self.theta, self.g, v), V)

    def S_T(self, V):
        """S_tᵀ V, (d, k)."""
        return _columns(lambda v: self.sam.vjp_theta(self.theta, self.g, v), V)

    def J(self, x, V):
        """Per-sample directional derivatives ∇ℓ_i(x)ᵀ V for i ∈ B_t, (|B|, k)."""
        return _jvp_block(self.problem.model, x, self.X_B, self.y_B, V)

    def Jt(self, x):
        """Per-sample gradients ∇ℓ_i(x) for i ∈ B_t as columns, (d, |B|)."""
        return self.problem.model.per_sample_grads(x, self.X_B, self.y_B).T


def _columns(apply, V):
    """Apply an O(d) vector map to every column of V (d, k)."""
    out = np.empty_like(V)
    for col in range(V.shape[1]):
        out[:, col] = apply(V[:, col])
    return out


# -- the exact recursions ---------------------------------------------------------------------------

def _adjoint(problem: Problem, trajectory: Trajectory, V_T: np.ndarray, progress: bool) -> np.ndarray:
    """Reverse recursion for the k functions whose gradients at θ_T are the columns of V_T (d, k).

    Returns I (n, k) with I[j, :] = Σ_t v_{t+1}ᵀ b_{t,j}. Per step, with U = v_{t+1}:
        Q   = K_t(ŵ_t) U                                   (the shared HVP at ŵ_t)
        PQ  = P_t Q
        I_j += −η_t c_{t,j} [∇ℓ_j(ŵ_t)ᵀ U + ∇ℓ_j(θ_t)ᵀ PQ]      (uses K and P symmetric)
        v_t = A_tᵀ U = U − η_t [Q + K_t(θ_t) PQ + S_tᵀ Q + λ_out U]
    """
    sam = trajectory.sam()
    steps = trajectory.steps
    influence = np.zeros((problem.n, V_T.shape[1]))  # (n, k)
    U = np.array(V_T, dtype=np.float64)  # v_T, (d, k)
    for t in range(steps - 1, -1, -1):
        step = _Step(problem, sam, trajectory, t)
        Q = step.K(step.theta_perturbed, U)
        PQ = step.P(Q)
        contribution = step.J(step.theta_perturbed, U) + step.J(step.theta, PQ)  # (|B|, k)
        np.add.at(influence, step.idx, -step.lr * step.inv_batch * contribution)
        U = U - step.lr * (Q + step.K(step.theta, PQ) + step.S_T(Q) + step.lam_out * U)
        _progress(steps - t, steps, "adjoint", progress)
    return influence


def _forward(problem: Problem, trajectory: Trajectory, progress: bool) -> np.ndarray:
    """Tangent recursion for all n training points at once; returns dθ_T/dw as (n, d).

    D holds dθ_t/dw_j in column j, (d, n). Per step:
        dĝ  = K_t(θ_t) D + c_{t,j} ∇ℓ_j(θ_t)         (tangent of g_t; the second term for j ∈ B_t)
        dŵ  = D + P_t dĝ + S_t D                     (tangent of ŵ_t)
        D  ← D − η_t [K_t(ŵ_t) dŵ + λ_out D + c_{t,j} ∇ℓ_j(ŵ_t)]
    """
    sam = trajectory.sam()
    steps = trajectory.steps
    D = np.zeros((problem.d, problem.n))  # d_0 = 0
    for t in range(steps):
        step = _Step(problem, sam, trajectory, t)
        dg = step.K(step.theta, D)
        dg[:, step.idx] += step.inv_batch * step.Jt(step.theta)
        dw = D + step.P(dg) + step.S(D)
        descent = step.K(step.theta_perturbed, dw) + step.lam_out * D
        descent[:, step.idx] += step.inv_batch * step.Jt(step.theta_perturbed)
        D = D - step.lr * descent
        _progress(t + 1, steps, "forward", progress)
    return D.T


def _autodiff(problem: Problem, trajectory: Trajectory, output) -> np.ndarray:
    """Jacobian of output(θ_T(w)) with respect to w by autograd through a re-run of the training loop.

    The loop is written here from Problem.objective, Problem.regularizer and SAM.perturbation only —
    none of the hand-written gradients, Hessians or Jacobians — so it is an independent oracle.
    Returns the transposed Jacobian, (n, dim output).
    """
    sam = trajectory.sam()
    coupled = problem.regularization == "coupled"
    lam = problem.weight_decay
    grad_objective = _ag_grad(problem.objective)  # ∇_θ F_{B,w}(θ), differentiable in w too

    def final_output(w):
        theta = trajectory.theta0
        for idx, lr in zip(trajectory.batches, trajectory.lrs):
            g = grad_objective(theta, idx, w)
            if coupled:
                g = g + lam * theta
            theta_perturbed = theta + sam.perturbation(theta, g)
            descent = grad_objective(theta_perturbed, idx, w)
            descent = descent + lam * (theta_perturbed if coupled else theta)
            theta = theta - lr * descent
        return output(theta)

    return np.asarray(_ag_jacobian(final_output)(anp.array(trajectory.weights))).T


# -- the approximations -------------------------------------------------------------------------------

def _approximation(problem, trajectory, X_test, y_test, method, progress) -> np.ndarray:
    """First-order and TracIn sums −Σ_t η_t c_{t,j} ∇ℓ_j(x_t)ᵀ ∇f(y_t) (module docstring)."""
    model = problem.model
    perturbed = not method.endswith("_unperturbed")
    tracin = method.startswith("tracin")
    steps = trajectory.steps
    influence = np.zeros((problem.n, X_test.shape[0]))
    fixed_test_grads = None if tracin else model.per_sample_grads(trajectory.theta_final, X_test, y_test).T
    for t in range(steps):
        idx = trajectory.batches[t]
        x = trajectory.thetas[t] + trajectory.epsilons[t] if perturbed else trajectory.thetas[t]
        test_grads = model.per_sample_grads(x, X_test, y_test).T if tracin else fixed_test_grads  # (d, m)
        contribution = _jvp_block(model, x, problem.X[idx], problem.y[idx], test_grads)  # (|B|, m)
        np.add.at(influence, idx, -trajectory.lrs[t] / len(idx) * contribution)
        _progress(t + 1, steps, method, progress)
    return influence


# -- batched derivative products ----------------------------------------------------------------------
# Fast paths for the linear models; any other model uses its own hvp / per_sample_grads.

def _hvp_block(model, theta, X, y, c, V) -> np.ndarray:
    """(Σ_i c_i ∇²ℓ_i(θ)) V for V of shape (d, k), returns (d, k)."""
    if type(model) is LogisticRegression:
        s = expit(model.logits(theta, X))
        Xa = _augment(X)  # (|B|, d)
        return Xa.T @ ((c * s * (1.0 - s))[:, None] * (Xa @ V))
    if type(model) is SoftmaxRegression:
        P = model.predict_proba(theta, X)  # (|B|, K)
        Xa = _augment(X)
        K, k = model.n_classes, V.shape[1]
        U = np.einsum("iq,qkm->ikm", Xa, V.reshape(Xa.shape[1], K, k))  # directional logits (|B|, K, k)
        SU = P[:, :, None] * U - P[:, :, None] * np.sum(P[:, :, None] * U, axis=1, keepdims=True)
        return np.einsum("iq,ikm->qkm", c[:, None] * Xa, SU).reshape(-1, k)
    rows = getattr(model, "_hessian_rows", None)
    if rows is not None:  # the MLP's R-operator takes a block of directions at once
        return rows(theta, X, y, c, np.ascontiguousarray(V.T)).T
    return _columns(lambda v: model.hvp(theta, X, y, c, v), V)


def _jvp_block(model, theta, X, y, V) -> np.ndarray:
    """Per-sample directional derivatives ∇ℓ_i(θ)ᵀ V, (|B|, k), without forming (|B|, d) where possible."""
    if type(model) is LogisticRegression:
        residual = expit(model.logits(theta, X)) - y  # σ(z) − y
        return residual[:, None] * (_augment(X) @ V)
    if type(model) is SoftmaxRegression:
        residual = model.predict_proba(theta, X)
        residual[np.arange(len(y)), y] -= 1.0  # π − e_y, (|B|, K)
        Xa = _augment(X)
        U = np.einsum("iq,qkm->ikm", Xa, V.reshape(Xa.shape[1], model.n_classes, V.shape[1]))
        return np.einsum("ik,ikm->im", residual, U)
    return model.per_sample_grads(theta, X, y) @ V
