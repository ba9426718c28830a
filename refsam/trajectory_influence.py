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
every step for the SAM and ASAM rules, as training does). The approximations are exact only in
degenerate cases (first_order with T = 1 and ρ = 0: no later step to propagate through, no inner
term); docs/trajectory.md derives the recursions and measures the approximations against the exact
result and against leave-one-out replays.
"""

from __future__ import annotations

import sys

import autograd.numpy as anp
import numpy as np
from autograd import grad as _ag_grad
from autograd import jacobian as _ag_jacobian
from scipy.special import expit

from .models import MLP, LogisticRegression, SoftmaxRegression, _augment
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

    Cost: "adjoint" ≈ 2 HVPs + 2 batch JVPs + 1 gradient per step for all m test functions at once
    (≤ 3× the training run, benchmarks/adjoint_vs_training.py); "forward" the same with n directions;
    the approximations one batch JVP per step (TracIn also m test gradients per step).
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

    ``method`` is "adjoint" (d adjoint vectors, one per coordinate of θ_T: a (d, d) block), "forward"
    (n tangents: a (d, n) block — the cheaper choice when n < d) or "autodiff"; all three are exact.
    Other arguments as :func:`trajectory_influence`.
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
    ``at_theta`` and ``at_perturbed`` hold the batch's derivatives at θ_t and ŵ_t (:class:`_BatchAt`).
    """

    def __init__(self, run: _Run, t: int):
        trajectory = run.trajectory
        self.sam = run.sam
        self.idx = trajectory.batches[t]  # B_t
        self.lr = trajectory.lrs[t]  # η_t
        self.theta = trajectory.thetas[t]  # θ_t
        self.theta_perturbed = self.theta + trajectory.epsilons[t]  # ŵ_t
        self.lam_in, self.lam_out = run.lam_in, run.lam_out
        self.inv_batch = 1.0 / len(self.idx)  # c_{t,j} for j ∈ B_t
        self.at_theta = run.batch_at(self.theta, self.idx)
        self.at_perturbed = run.batch_at(self.theta_perturbed, self.idx)
        self.g = self.at_theta.grad() + self.lam_in * self.theta  # g_t

    def P(self, V):
        """P_t V = (∂ε/∂g) V, (d, k); P_t is symmetric, so this is also P_tᵀ V."""
        return _columns(lambda v: self.sam.jvp_g(self.theta, self.g, v), V)

    def S(self, V):
        """S_t V = (∂ε/∂θ|_g) V, (d, k)."""
        if self.sam.rule != "asam":
            return np.zeros_like(V)
        return _columns(lambda v: self.sam.jvp_theta(self.theta, self.g, v), V)

    def S_T(self, V):
        """S_tᵀ V, (d, k)."""
        if self.sam.rule != "asam":
            return np.zeros_like(V)
        return _columns(lambda v: self.sam.vjp_theta(self.theta, self.g, v), V)


class _Run:
    """The validated problem (at the run's weights), the trajectory and what every step shares."""

    def __init__(self, problem: Problem, trajectory: Trajectory):
        self.problem, self.trajectory = problem, trajectory
        self.sam = trajectory.sam()
        lam = problem.weight_decay
        self.lam_in, self.lam_out = (lam, 0.0) if problem.regularization == "coupled" else (0.0, lam)
        model = problem.model
        self._linear = type(model) in (LogisticRegression, SoftmaxRegression)
        self._X_aug = _augment(problem.X) if self._linear else None  # x̃ = [x, 1] for every sample

    def batch_at(self, x, idx) -> _BatchAt:
        """The batch B's derivatives at x, Hessian weighted by c_i = w_i/|B|."""
        problem = self.problem
        c = problem.weights[idx] / len(idx)
        X_B = self._X_aug[idx] if self._linear else problem.X[idx]
        return _batch_at(problem.model, x, X_B, problem.y[idx], c)


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
    run = _Run(problem, trajectory)
    steps = trajectory.steps
    influence = np.zeros((problem.n, V_T.shape[1]))  # (n, k)
    U = np.array(V_T, dtype=np.float64)  # v_T, (d, k)
    for t in range(steps - 1, -1, -1):
        step = _Step(run, t)
        HU, J_perturbed_U = step.at_perturbed.hvp_and_jvp(U)
        Q = HU + step.lam_in * U  # K_t(ŵ_t) U
        PQ = step.P(Q)
        HPQ, J_theta_PQ = step.at_theta.hvp_and_jvp(PQ)
        np.add.at(influence, step.idx, -step.lr * step.inv_batch * (J_perturbed_U + J_theta_PQ))
        U = U - step.lr * (Q + HPQ + step.lam_in * PQ + step.S_T(Q) + step.lam_out * U)
        _progress(steps - t, steps, "adjoint", progress)
    return influence


def _forward(problem: Problem, trajectory: Trajectory, progress: bool) -> np.ndarray:
    """Tangent recursion for all n training points at once; returns dθ_T/dw as (n, d).

    D holds dθ_t/dw_j in column j, (d, n). Per step:
        dĝ  = K_t(θ_t) D + c_{t,j} ∇ℓ_j(θ_t)         (tangent of g_t; the second term for j ∈ B_t)
        dŵ  = D + P_t dĝ + S_t D                     (tangent of ŵ_t)
        D  ← D − η_t [K_t(ŵ_t) dŵ + λ_out D + c_{t,j} ∇ℓ_j(ŵ_t)]
    """
    run = _Run(problem, trajectory)
    steps = trajectory.steps
    D = np.zeros((problem.d, problem.n))  # d_0 = 0
    for t in range(steps):
        step = _Step(run, t)
        dg = step.at_theta.hvp(D) + step.lam_in * D  # K_t(θ_t) D
        dg[:, step.idx] += step.inv_batch * step.at_theta.per_sample_grads()
        dw = D + step.P(dg) + step.S(D)
        descent = step.at_perturbed.hvp(dw) + step.lam_in * dw + step.lam_out * D
        descent[:, step.idx] += step.inv_batch * step.at_perturbed.per_sample_grads()
        D = D - step.lr * descent
        _progress(t + 1, steps, "forward", progress)
    return D.T


def _autodiff(problem: Problem, trajectory: Trajectory, output) -> np.ndarray:
    """Jacobian of output(θ_T(w)) with respect to w by autograd through a re-run of the training loop.

    The loop is written here from Problem.objective and SAM.perturbation only —
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
    run = _Run(problem, trajectory)
    perturbed = not method.endswith("_unperturbed")
    tracin = method.startswith("tracin")
    steps = trajectory.steps
    influence = np.zeros((problem.n, X_test.shape[0]))
    test_at = None if tracin else problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test).T
    for t in range(steps):
        idx = trajectory.batches[t]
        x = trajectory.thetas[t] + trajectory.epsilons[t] if perturbed else trajectory.thetas[t]
        test_grads = problem.model.per_sample_grads(x, X_test, y_test).T if tracin else test_at  # (d, m)
        contribution = run.batch_at(x, idx).jvp(test_grads)  # ∇ℓ_j(x)ᵀ ∇f, (|B|, m)
        np.add.at(influence, idx, -trajectory.lrs[t] / len(idx) * contribution)
        _progress(t + 1, steps, method, progress)
    return influence


# One MLP tangent pass holds (k directions × |B| samples × layer width) floats; blocks of directions keep
# that below this many (≈ 32 MB) when the forward recursion or many test functions ask for large k.
_TANGENT_BLOCK_FLOATS = 4_000_000


# -- the batch's derivatives at one point -------------------------------------------------------------

def _batch_at(model, x, X_B, y_B, c) -> _BatchAt:
    """Products with the derivatives of batch B at x; fast paths for refsam's three models.

    For the linear models ``X_B`` is already augmented (x̃ = [x, 1]); for the others it is raw.
    """
    if type(model) is LogisticRegression:
        return _LogisticAt(x, X_B, y_B, c)
    if type(model) is SoftmaxRegression:
        return _SoftmaxAt(model.n_classes, x, X_B, y_B, c)
    if type(model) is MLP:
        return _MLPAt(model, x, X_B, y_B, c)
    return _BatchAt(model, x, X_B, y_B, c)


class _BatchAt:
    """Derivatives of the losses of batch B at a point x, c_i = w_i/|B|:

        grad()           Σ_i c_i ∇ℓ_i(x)                                   (d,)
        hvp(V)           H V = Σ_i c_i ∇²ℓ_i(x) V                           (d, k)
        jvp(V)           per-sample directional derivatives ∇ℓ_i(x)ᵀ V     (|B|, k)
        hvp_and_jvp(V)   both, sharing what they can
        per_sample_grads()  ∇ℓ_i(x) as columns                               (d, |B|)
    This generic version uses the model's own methods.
    """

    def __init__(self, model, x, X_B, y_B, c):
        self.model, self.x, self.X, self.y, self.c = model, x, X_B, y_B, c

    def grad(self):
        return self.model.grad(self.x, self.X, self.y, self.c)

    def hvp(self, V):
        return _columns(lambda v: self.model.hvp(self.x, self.X, self.y, self.c, v), V)

    def jvp(self, V):
        return self.per_sample_grads().T @ V

    def hvp_and_jvp(self, V):
        return self.hvp(V), self.jvp(V)

    def per_sample_grads(self):
        return self.model.per_sample_grads(self.x, self.X, self.y).T


class _LogisticAt(_BatchAt):
    """Logistic regression with z = x̃ᵀθ, m = (1 − 2y) z (the model's stable forms):
    ∇ℓ_i = (1 − 2y_i) σ(m_i) x̃_i and ∇²ℓ_i = σ(z_i) σ(−z_i) x̃_i x̃_iᵀ."""

    def __init__(self, x, X_aug, y, c):
        self.X, self.c = X_aug, c  # x̃_i as rows, (|B|, d)
        z = X_aug @ x
        sign = 1.0 - 2.0 * y
        self.residual = sign * expit(sign * z)  # σ(z) − y
        self.curvature = c * expit(z) * expit(-z)  # c_i σ(z_i) σ(−z_i)

    def grad(self):
        return self.X.T @ (self.c * self.residual)

    def hvp_and_jvp(self, V):
        XV = self.X @ V  # x̃_iᵀ v, (|B|, k)
        return self.X.T @ (self.curvature[:, None] * XV), self.residual[:, None] * XV

    def hvp(self, V):
        return self.hvp_and_jvp(V)[0]

    def jvp(self, V):
        return self.residual[:, None] * (self.X @ V)

    def per_sample_grads(self):
        return (self.residual[:, None] * self.X).T


class _SoftmaxAt(_BatchAt):
    """Softmax regression, θ = vec(Θ) with Θ (q, K), q = p + 1: ∇ℓ_i = vec(x̃_i (π_i − e_{y_i})ᵀ),
    ∇²ℓ_i v = vec(x̃_i (S_i u_i)ᵀ) with u_i = Vᵀx̃_i (directional logits), S_i = diag(π_i) − π_i π_iᵀ."""

    def __init__(self, n_classes, x, X_aug, y, c):
        self.X, self.c, self.K = X_aug, c, n_classes
        Z = X_aug @ x.reshape(X_aug.shape[1], n_classes)  # logits, (|B|, K)
        Z = Z - Z.max(axis=1, keepdims=True)
        self.pi = np.exp(Z)
        self.pi /= self.pi.sum(axis=1, keepdims=True)  # π, (|B|, K)
        self.residual = self.pi.copy()
        self.residual[np.arange(len(y)), y] -= 1.0  # π − e_y

    def _directional_logits(self, V):
        return np.einsum("iq,qkm->ikm", self.X, V.reshape(self.X.shape[1], self.K, V.shape[1]))

    def grad(self):
        return (self.X.T @ (self.c[:, None] * self.residual)).ravel()

    def hvp_and_jvp(self, V):
        U = self._directional_logits(V)  # (|B|, K, k)
        pi = self.pi[:, :, None]
        SU = pi * U - pi * np.sum(pi * U, axis=1, keepdims=True)  # S_i u_i
        hv = np.einsum("iq,ikm->qkm", self.c[:, None] * self.X, SU).reshape(-1, V.shape[1])
        return hv, np.einsum("ik,ikm->im", self.residual, U)

    def hvp(self, V):
        return self.hvp_and_jvp(V)[0]

    def jvp(self, V):
        return np.einsum("ik,ikm->im", self.residual, self._directional_logits(V))

    def per_sample_grads(self):
        return (self.X[:, :, None] * self.residual[:, None, :]).reshape(len(self.X), -1).T


class _MLPAt(_BatchAt):
    """The MLP: one forward/backward pass (``MLP._second_order_primal``) shared by the gradient and
    every tangent pass; ``hvp_and_jvp`` is Pearlmutter's R-operator (the equations of
    ``MLP._hessian_rows``) that also returns the per-sample ∇ℓ_iᵀ v = (π_i − e_{y_i})ᵀ ż_i, which the
    forward tangent computes anyway. Checked against autograd by the adjoint = autodiff tests."""

    def __init__(self, model, x, X_B, y_B, c):
        super().__init__(model, x, X_B, y_B, c)
        self.primal = model._second_order_primal(x, X_B, y_B)

    def grad(self):
        parts = []
        for a, delta in zip(self.primal.inputs, self.primal.deltas):
            parts.append((a.T @ (self.c[:, None] * delta)).ravel())  # a_{l-1}ᵀ C δ_l
            parts.append(self.c @ delta)  # δ_lᵀ c
        return np.concatenate(parts)

    def _forward_tangent(self, V):
        """ṗre_l = ȧ_{l-1} W_l + a_{l-1} V_l + v_l,  ȧ_l = f'(pre_l) ⊙ ṗre_l (ȧ_0 = 0) for the columns
        of V (d, k). Returns (directions [(V_l (k, in, out), v_l (k, out))], [ṗre_l (k, n, out)])."""
        p = self.primal
        n, k, L = self.X.shape[0], V.shape[1], len(p.layers)
        directions = self.model._unpack_directions(np.ascontiguousarray(V.T))
        pre_dots, a_dot = [], None
        for l, (W, _) in enumerate(p.layers):
            V_l, v_l = directions[l]
            pre_dot = np.matmul(p.inputs[l], V_l) + v_l[:, None, :]  # (k, n, out)
            if a_dot is not None:
                pre_dot += (a_dot.reshape(k * n, -1) @ W).reshape(k, n, -1)
            pre_dots.append(pre_dot)
            if l < L - 1:
                a_dot = p.slopes[l] * pre_dot
        return directions, pre_dots

    def _column_blocks(self, V):
        """Split V's columns so one tangent pass holds at most _TANGENT_BLOCK_FLOATS floats per layer."""
        per_column = self.X.shape[0] * max(self.model.sizes)
        width = max(1, _TANGENT_BLOCK_FLOATS // per_column)
        return [V[:, lo:lo + width] for lo in range(0, V.shape[1], width)]

    def jvp(self, V):
        """∇ℓ_iᵀ v = δ_{L,i}ᵀ ż_i with δ_L = π − e_y: the forward tangent only, (n, k)."""
        delta_L = self.primal.deltas[-1]
        return np.concatenate([np.sum(delta_L * self._forward_tangent(block)[1][-1], axis=2).T
                               for block in self._column_blocks(V)], axis=1)

    def hvp_and_jvp(self, V):
        blocks = [self._hvp_and_jvp_block(block) for block in self._column_blocks(V)]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate([b[0] for b in blocks], axis=1), np.concatenate([b[1] for b in blocks], axis=1)

    def _hvp_and_jvp_block(self, V):
        p, c = self.primal, self.c
        n, k, L = self.X.shape[0], V.shape[1], len(p.layers)
        # 1. forward tangent
        directions, pre_dots = self._forward_tangent(V)
        # 2. output: per-sample ∇ℓ_iᵀ v = δ_Lᵀ ż and δ̇_L = π ⊙ ż − π (πᵀż)
        z_dot = pre_dots[-1]  # (k, n, K)
        jvp = np.sum(p.deltas[-1] * z_dot, axis=2).T  # (n, k)
        delta_dot = p.pi * z_dot - p.pi * np.sum(p.pi * z_dot, axis=2, keepdims=True)
        # 3. backward tangent: (H v)_{W_l} = ȧ_{l-1}ᵀ C δ_l + a_{l-1}ᵀ C δ̇_l,  (H v)_{b_l} = δ̇_lᵀ c
        out = [None] * L
        for l in range(L - 1, -1, -1):
            hv_W = np.matmul(p.inputs[l].T, c[:, None] * delta_dot)  # (k, in, out)
            if l > 0:
                a_dot_prev = p.slopes[l - 1] * pre_dots[l - 1]  # ȧ_{l-1}, (k, n, in)
                hv_W += np.matmul(a_dot_prev.transpose(0, 2, 1), c[:, None] * p.deltas[l])
            out[l] = (hv_W.reshape(k, -1), c @ delta_dot)
            if l == 0:
                break
            W = p.layers[l][0]
            back = p.deltas[l] @ W.T  # δ_l W_lᵀ, (n, in)
            # δ̇_{l-1} = (δ̇_l W_lᵀ + δ_l V_lᵀ) ⊙ f'(pre_{l-1}) + (δ_l W_lᵀ) ⊙ f''(pre_{l-1}) ⊙ ṗre_{l-1}
            delta_dot = (delta_dot.reshape(k * n, -1) @ W.T).reshape(k, n, -1)
            delta_dot += np.matmul(p.deltas[l], directions[l][0].transpose(0, 2, 1))
            delta_dot *= p.slopes[l - 1]
            delta_dot += (back * p.curvatures[l - 1]) * pre_dots[l - 1]
        hv = np.concatenate([part for pair in out for part in pair], axis=1).T  # (d, k)
        return hv, jvp

    def hvp(self, V):
        return self.hvp_and_jvp(V)[0]
