"""Base optimizers as objects, with ``torch.optim``'s names and semantics: what a SAM step hands its
descent gradient to.

Conventions
-----------
* The SAM step (`refsam.training.step`) builds the *descent gradient* g̃_t = ∇F_{B_t,w}(ŵ_t)
  (+ the loss-level L2 gradient of ``Problem(l2=…)`` at ŵ_t) and hands it, with the unperturbed θ_t, to
  the optimizer, as the PyTorch SAM wrapper does. The optimizer owns everything after that: its weight
  decay (added at the unperturbed point: never seen by the perturbation), its state, its learning rate.
* An optimizer's **state** is a tuple of arrays shaped like θ (``state_names`` names them, torch's
  names); it starts at zeros (`Optimizer.init_state()`). The step count t is data, not state.
* Every optimizer gives its update and the update's derivatives, so that training, replays and every
  exact influence method differentiate the same equation:

      update(t, η, θ, s, g̃)                      → (θ', s')
      jvp(t, η, θ, s, g̃, θ̇, ṡ, ġ̃, λ̇)            → (θ̇', ṡ')          (tangents, blocks (d, k))
      vjp(t, η, θ, s, g̃, θ̄', s̄')                → (θ̄, s̄, ḡ̃)         (adjoints,  blocks (d, k))
      lr_derivative(t, θ, s, g̃)                  → ∂θ'/∂η            (shape (d,))

  with λ̇ the tangent of the weight decay λ (a row (k,) of hyper-parameter directions; None: 0). Every
  update here is θ' = θ − η X(t, θ, s, g̃) with a state that never reads η, so ∂θ'/∂η = −X and
  ∂s'/∂η = 0.
* At a full-batch fixed point the step is zero where the optimizer's residual is zero,
  ``residual(θ, g̃) = g̃ + λθ`` for SGD (with or without momentum: the buffer is then 0).

SGD, to the letter of ``torch.optim.SGD`` (μ = momentum, τ = dampening, λ = weight_decay):

    d_t    = g̃_t + λ θ_t
    buf_t  = μ buf_{t−1} + c_t d_t,     c_0 = 1 (torch's buf_0 = d_0), c_t = 1 − τ for t ≥ 1, buf_{−1} = 0
    step_t = d_t + μ buf_t (Nesterov)   or   buf_t (heavy ball)   or   d_t (μ = 0: no buffer is kept)
    θ_{t+1} = θ_t − η_t step_t

λ enters d_t and goes through the buffer (torch's order). That is not SGDW/AdamW's "decoupled" weight
decay; it is decoupled from the *perturbation* only (a loss-level L2 belongs on the problem instead).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..objective import decay_times
from ..tolerances import ADAM_V_WARN
from ..validation import check_finite_array, check_nonnegative, check_positive

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "optimizer_from_config"]

Array = NDArray[np.float64]
State = tuple[Array, ...]


class Optimizer:
    """The interface every base optimizer implements (module docstring); see `SGD`.

    Attributes
    ----------
    lr : float or array (T,)
        η, constant or one rate per step (a schedule).
    weight_decay : float or array (d,)
        λ, one for every coordinate or one per coordinate (e.g. 0 on biases).
    """

    name: ClassVar[str] = ""
    derivatives_read_gradient: ClassVar[bool] = True  # jvp/vjp read g̃ (False: linear in it, SGD)
    lr: float | Array
    weight_decay: float | Array

    # -- configuration ----------------------------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        """The names of the state arrays, in order (torch's names); () for a stateless optimizer."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The optimizer as JSON (without ``lr``: a run stores its per-step rates as an array)."""
        raise NotImplementedError

    def replace(self, **changes: Any) -> Optimizer:
        """The same optimizer with some settings changed, e.g. ``replace(lr=0.1, weight_decay=1e-3)``."""
        settings = {k: v for k, v in self.config().items() if k != "name"}
        return type(self)(**{"lr": self.lr, **settings, **changes})

    def learning_rates(self, steps: int) -> Array:
        """η_0 … η_{T−1}, shape (T,): the constant rate repeated, or the schedule (its length must be T)."""
        if isinstance(self.lr, float):
            return np.full(steps, self.lr)
        if self.lr.shape != (steps,):
            raise InvalidInputError(
                f"the optimizer's `lr` schedule has {self.lr.shape[0]} rates; the run has {steps} steps")
        return np.asarray(self.lr.copy(), dtype=np.float64)

    def scalar_lr(self) -> float:
        """A single η for diagnostics at a root (the stability of training there): the constant rate, or
        the schedule's last rate (where a run ends)."""
        return self.lr if isinstance(self.lr, float) else float(self.lr[-1])

    def check_dimension(self, d: int) -> None:
        """Raise if a per-coordinate weight decay does not have d entries."""
        if isinstance(self.weight_decay, np.ndarray) and self.weight_decay.shape != (d,):
            raise InvalidInputError(f"the optimizer's per-coordinate `weight_decay` must have shape ({d},) "
                                    f"like θ, got {self.weight_decay.shape}")

    def weight_decay_config(self) -> float | list[float]:
        lam = self.weight_decay
        return [float(v) for v in lam] if isinstance(lam, np.ndarray) else float(lam)

    # -- the update and its derivatives -------------------------------------------------------------------
    def init_state(self, theta: Array) -> State:
        """The state before the first step: zeros shaped like θ, one per state name."""
        return tuple(np.zeros_like(theta) for _ in self.state_names)

    def residual(self, theta: Array, grad: Array) -> Array:
        """What vanishes at a full-batch fixed point of this optimizer, given the descent gradient g̃."""
        raise NotImplementedError

    def residual_scale(self, theta: Array, grad: Array) -> float | Array:
        """D = ∂residual/∂g̃, diagonal (a float or an array (d,)): 1 where the residual is g̃ + λθ. With
        ∂residual/∂θ|_g̃ = λ (every optimizer here), the root's Jacobian is J = D M + λ I (M = ∂g̃/∂θ)."""
        return 1.0

    def update(self, t: int, lr: float, theta: Array, state: State, grad: Array) -> tuple[Array, State]:
        raise NotImplementedError

    def lr_derivative(self, t: int, theta: Array, state: State, grad: Array) -> Array:
        """∂θ'/∂η at fixed (θ, s, g̃): −X for the update θ' = θ − η X (module docstring), shape (d,)."""
        raise NotImplementedError

    def warn_if_singular(self, t: int, theta: Array, state: State, grad: Array) -> None:
        """Warn where this step's derivative is undefined or dominated by rounding (none for SGD)."""

    def jvp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, dtheta: Array,
            dstate: State, dgrad: Array, dlam: Array | None = None) -> tuple[Array, State]:
        """Tangents of `update()`; ``grad`` may be None where ``derivatives_read_gradient`` is False."""
        raise NotImplementedError

    def vjp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, ct_theta: Array,
            ct_state: State) -> tuple[Array, State, Array]:
        """Adjoints of `update()` (its transpose); ``grad`` as in `jvp()`."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, ``torch.optim.SGD(params, lr, momentum, dampening,
    nesterov, weight_decay)`` (module docstring for the equations).

    Parameters
    ----------
    lr : float > 0, or array (T,) of floats > 0
        η, constant or per step (a schedule; ``refsam.train`` checks its length against the steps).
    momentum : float in [0, 1)
        μ; 0 is plain SGD (no buffer).
    dampening : float in [0, 1]
        τ: the buffer adds (1 − τ) d_t from the second step on.
    nesterov : bool
        The step is d_t + μ buf_t instead of buf_t. (PyTorch rejects Nesterov with dampening ≠ 0;
        refsam accepts it, with the same formulas.)
    weight_decay : float >= 0, or array (d,) of floats >= 0
        λ, added to the descent gradient at the unperturbed point: d_t = g̃_t + λ θ_t (per coordinate:
        λ_i θ_i, e.g. ``np.where(model.bias_mask(p), 0.0, λ)`` for no decay on biases).
    """

    name = "SGD"
    derivatives_read_gradient = False  # the update is linear in (θ, state, g̃)

    def __init__(self, lr: float | ArrayLike, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float | ArrayLike = 0.0) -> None:
        self.lr = _check_lr(lr)
        self.momentum = check_nonnegative("momentum", momentum)
        self.dampening = check_nonnegative("dampening", dampening)
        if self.momentum >= 1.0:
            raise InvalidInputError(f"`momentum` must lie in [0, 1), got {self.momentum}")
        if self.dampening > 1.0:
            raise InvalidInputError(f"`dampening` must lie in [0, 1], got {self.dampening}")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise InvalidInputError(f"`nesterov` must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0.0:
            raise InvalidInputError(
                "`nesterov=True` needs `momentum` > 0 (as in torch.optim.SGD), got momentum=0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_weight_decay(weight_decay)

    def __repr__(self) -> str:
        lr = f"{self.lr:g}" if isinstance(self.lr, float) else f"<schedule of {self.lr.size}>"
        extras = "".join(f", {k}={v}" for k, v in (("momentum", self.momentum), ("dampening", self.dampening),
                                                   ("nesterov", self.nesterov)) if v)
        lam = self.weight_decay
        decay = (f", weight_decay={lam:g}" if isinstance(lam, float) and lam
                 else ", weight_decay=<per-coordinate>" if isinstance(lam, np.ndarray) else "")
        return f"SGD(lr={lr}{extras}{decay})"

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0.0 else ()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay_config()}

    def buffer_weight(self, t: int) -> float:
        """c_t, the factor of d_t in buf_t: 1 at the first step, 1 − τ afterwards."""
        return 1.0 if t == 0 else 1.0 - self.dampening

    def residual(self, theta: Array, grad: Array) -> Array:
        """d = g̃ + λθ: at a root the step and the buffer are 0."""
        return grad + decay_times(self.weight_decay, theta)

    def _step(self, t: int, state: State, d: Array) -> tuple[Array, State]:
        """(step_t, state_t) from d_t and state_{t−1}: the momentum part, linear in (d, state)."""
        if not state:  # μ = 0: step = d exactly
            return d, ()
        buf = self.momentum * state[0] + self.buffer_weight(t) * d
        return (d + self.momentum * buf if self.nesterov else buf), (buf,)

    def update(self, t: int, lr: float, theta: Array, state: State, grad: Array) -> tuple[Array, State]:
        d = self.residual(theta, grad)  # d_t = g̃_t + λ θ_t
        step, new_state = self._step(t, state, d)
        return theta - lr * step, new_state

    def lr_derivative(self, t: int, theta: Array, state: State, grad: Array) -> Array:
        """∂θ'/∂η = −step_t (the buffer does not read η)."""
        return -self._step(t, state, self.residual(theta, grad))[0]

    def jvp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, dtheta: Array,
            dstate: State, dgrad: Array, dlam: Array | None = None) -> tuple[Array, State]:
        """The update is linear in (θ, state, g̃): its tangent is the same map on the tangents, plus θ λ̇
        for a tangent of λ (scalar λ only)."""
        dd = dgrad + decay_times(self.weight_decay, dtheta)  # ḋ = ġ̃ + λ θ̇ (+ θ λ̇)
        if dlam is not None:
            dd = dd + theta[:, None] * dlam[None, :]
        dstep, new_dstate = self._step(t, dstate, dd)
        return dtheta - lr * dstep, new_dstate

    def vjp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, ct_theta: Array,
            ct_state: State) -> tuple[Array, State, Array]:
        """Transpose of the update (U = θ̄', a = buf̄_t, b̄ the adjoint of buf_t in total):

            no momentum:  d̄ = −η U
            heavy ball:   b̄ = a − η U,        d̄ = c_t b̄,             buf̄_{t−1} = μ b̄
            Nesterov:     b̄ = a − η μ U,      d̄ = c_t b̄ − η U,       buf̄_{t−1} = μ b̄
            then θ̄ = U + λ d̄ and ḡ̃ = d̄ (d = g̃ + λθ).
        """
        if not ct_state:
            ct_d = -lr * ct_theta
            new_ct_state: State = ()
        else:
            b_bar = ct_state[0] - lr * (self.momentum if self.nesterov else 1.0) * ct_theta
            ct_d = self.buffer_weight(t) * b_bar
            if self.nesterov:
                ct_d = ct_d - lr * ct_theta
            new_ct_state = (self.momentum * b_bar,)
        return ct_theta + decay_times(self.weight_decay, ct_d), new_ct_state, ct_d


class Adam(Optimizer):
    """Adam, ``torch.optim.Adam(params, lr, betas, eps, weight_decay)``, with optax's ``eps_root``.

    With a_t = g̃_t + λ θ_t (λ = ``weight_decay``, an L2 gradient added at the unperturbed point, inside
    the moments: torch's Adam), β₁, β₂ = ``betas``, the state (m, v) = (exp_avg, exp_avg_sq), zeros
    before the first step, and c₁ = 1 − β₁^{t+1}, c₂ = 1 − β₂^{t+1} (t = 0, 1, …):

        m_t = β₁ m_{t−1} + (1 − β₁) a_t          v_t = β₂ v_{t−1} + (1 − β₂) a_t²
        m̂ = m_t / c₁,   v̂ = v_t / c₂,   r = √(v̂ + eps_root)
        θ_{t+1} = θ_t − η_t m̂ / (r + eps)

    Derivatives (elementwise; u = m̂/(r + eps)): ∂u/∂m = 1/(c₁ (r + eps)),
    ∂u/∂v = −m̂ / (2 c₂ r (r + eps)²) — of order 1/eps² as v̂ + eps_root → 0 (unbounded at eps = 0):
    with ``eps_root = 0`` a coordinate whose v̂ is round-off small amplifies the rounding of its a_t by
    that much, and refsam warns (`refsam.tolerances.ADAM_V_WARN`). At v̂ + eps_root = 0 exactly (a
    coordinate no gradient has reached: every a_s = 0 so far, so m = 0 and v's tangent is 0 too) the
    term through v is multiplied by 0 and the derivative is exactly ∂u/∂m's: no warning.

    Parameters
    ----------
    lr : float > 0, or array (T,) of floats > 0
    betas : (β₁, β₂), each in [0, 1)
    eps : float >= 0, added outside the root (torch's place)
    weight_decay : float >= 0 or array (d,)
    eps_root : float >= 0, added inside the root (optax's ``eps_root``; torch has 0)
    amsgrad : must be False: AMSGrad's max(v_max, v) is not differentiable where the two tie, and refsam
        refuses it rather than differentiate it silently.
    """

    name = "Adam"
    decoupled = False  # AdamW: θ ← θ (1 − η λ) before the moments, and no λθ inside them

    def __init__(self, lr: float | ArrayLike = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float | ArrayLike = 0.0, *, eps_root: float = 0.0,
                 amsgrad: bool = False) -> None:
        self.lr = _check_lr(lr)
        if amsgrad:
            raise InvalidInputError(
                f"`amsgrad=True` is not supported by {self.name}: AMSGrad's max(v_max, v) has no derivative "
                f"where the two tie, so the exact influence of such a run is undefined; use amsgrad=False")
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise InvalidInputError(f"`betas` must be two floats in [0, 1), got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise InvalidInputError(f"`betas` must be two floats in [0, 1), got {betas!r}")
        self.betas = (beta1, beta2)
        self.eps = check_nonnegative("eps", eps)
        self.eps_root = check_nonnegative("eps_root", eps_root)
        if self.eps == 0.0 and self.eps_root == 0.0:
            raise InvalidInputError("`eps` and `eps_root` are both 0: the step m̂/√v̂ divides by zero where v̂ "
                                    "= 0; give eps > 0 (torch's default 1e-8) or eps_root > 0")
        self.weight_decay = _check_weight_decay(weight_decay)

    def __repr__(self) -> str:
        lr = f"{self.lr:g}" if isinstance(self.lr, float) else f"<schedule of {self.lr.size}>"
        lam = self.weight_decay
        decay = f"{lam:g}" if isinstance(lam, float) else "<per-coordinate>"
        root = f", eps_root={self.eps_root:g}" if self.eps_root else ""
        return f"{self.name}(lr={lr}, betas={self.betas}, eps={self.eps:g}, weight_decay={decay}{root})"

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")  # m, v (torch's names)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay_config(), "eps_root": self.eps_root}

    def replace(self, **changes: Any) -> Optimizer:
        settings = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                    "eps_root": self.eps_root}
        return type(self)(**{**settings, **changes})

    def residual(self, theta: Array, grad: Array) -> Array:
        """At a full-batch fixed point m̂ = 0: a = g̃ + λθ = 0, SGD's root (Adam's L2 is in the moments)."""
        return grad + decay_times(self.weight_decay, theta)

    # -- the pieces of the update ----------------------------------------------------------------------
    def _a(self, theta: Array, grad: Array) -> Array:
        """a_t, what the moments average: g̃ + λθ (Adam), g̃ (AdamW)."""
        return grad if self.decoupled else grad + decay_times(self.weight_decay, theta)

    def _corrections(self, t: int) -> tuple[float, float]:
        beta1, beta2 = self.betas
        return 1.0 - beta1 ** (t + 1), 1.0 - beta2 ** (t + 1)

    def _moments(self, state: State, a: Array) -> tuple[Array, Array]:
        beta1, beta2 = self.betas
        m_prev, v_prev = state
        return beta1 * m_prev + (1.0 - beta1) * a, beta2 * v_prev + (1.0 - beta2) * (a * a)

    def _direction(self, t: int, m: Array, v: Array) -> tuple[Array, Array, Array, Array]:
        """(u, ∂u/∂m, ∂u/∂v, r) elementwise, u = m̂/(r + eps), r = √(v̂ + eps_root)."""
        c1, c2 = self._corrections(t)
        r = np.sqrt(v / c2 + self.eps_root)
        denominator = r + self.eps
        u = (m / c1) / denominator
        du_dm = 1.0 / (c1 * denominator)
        with np.errstate(divide="ignore", invalid="ignore"):
            du_dv = np.where(r > 0.0, -(m / c1) / (2.0 * c2 * r * denominator * denominator), 0.0)
        return u, du_dm, du_dv, r

    def update(self, t: int, lr: float, theta: Array, state: State, grad: Array) -> tuple[Array, State]:
        m, v = self._moments(state, self._a(theta, grad))
        u = self._direction(t, m, v)[0]
        if self.decoupled:  # AdamW: decay first, θ (1 − η λ)
            theta = theta - lr * decay_times(self.weight_decay, theta)
        return theta - lr * u, (m, v)

    def lr_derivative(self, t: int, theta: Array, state: State, grad: Array) -> Array:
        """∂θ'/∂η = −u_t (Adam), −(u_t + λθ_t) (AdamW: θ' = θ(1 − ηλ) − η u); m and v do not read η."""
        u = self._direction(t, *self._moments(state, self._a(theta, grad)))[0]
        return -(u + decay_times(self.weight_decay, theta)) if self.decoupled else -u

    def _linearisation(self, t: int, theta: Array, state: State, grad: Array | None
                       ) -> tuple[Array, Array, Array]:
        """(a_t, ∂u/∂m, ∂u/∂v) at this step: what `jvp()` and `vjp()` both read."""
        assert grad is not None  # Adam's derivatives read g̃
        a = self._a(theta, grad)
        _, du_dm, du_dv, _ = self._direction(t, *self._moments(state, a))
        return a, du_dm, du_dv

    def jvp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, dtheta: Array,
            dstate: State, dgrad: Array, dlam: Array | None = None) -> tuple[Array, State]:
        """Tangents (blocks (d, k)) of the update; ``dlam`` the tangent of a scalar λ per column."""
        beta1, beta2 = self.betas
        a, du_dm, du_dv = self._linearisation(t, theta, state, grad)
        col = (slice(None), None)
        da = dgrad
        if not self.decoupled:  # ȧ = ġ̃ + λ θ̇ (+ θ λ̇)
            da = da + decay_times(self.weight_decay, dtheta)
            if dlam is not None:
                da = da + theta[col] * dlam[None, :]
        dm = beta1 * dstate[0] + (1.0 - beta1) * da
        dv = beta2 * dstate[1] + 2.0 * (1.0 - beta2) * a[col] * da
        du = du_dm[col] * dm + du_dv[col] * dv
        new_dtheta = dtheta - lr * du
        if self.decoupled:  # θ (1 − ηλ): −η (λ θ̇ + θ λ̇)
            new_dtheta = new_dtheta - lr * decay_times(self.weight_decay, dtheta)
            if dlam is not None:
                new_dtheta = new_dtheta - lr * theta[col] * dlam[None, :]
        return new_dtheta, (dm, dv)

    def vjp(self, t: int, lr: float, theta: Array, state: State, grad: Array | None, ct_theta: Array,
            ct_state: State) -> tuple[Array, State, Array]:
        """Transpose of `jvp()` in (θ, m, v, g̃): with U = θ̄', the adjoints of m_t and v_t are
        m̄ = (m̄ from later) − η U ∂u/∂m and v̄ = (v̄ from later) − η U ∂u/∂v; then m̄_{t−1} = β₁ m̄,
        v̄_{t−1} = β₂ v̄, ā = (1 − β₁) m̄ + 2 (1 − β₂) a v̄ = ḡ̃, and θ̄ = U (+ λ ā for Adam; (1 − ηλ) U
        for AdamW)."""
        beta1, beta2 = self.betas
        a, du_dm, du_dv = self._linearisation(t, theta, state, grad)
        col = (slice(None), None)
        ct_m = ct_state[0] - lr * du_dm[col] * ct_theta
        ct_v = ct_state[1] - lr * du_dv[col] * ct_theta
        ct_a = (1.0 - beta1) * ct_m + 2.0 * (1.0 - beta2) * a[col] * ct_v
        if self.decoupled:
            new_ct_theta = ct_theta - lr * decay_times(self.weight_decay, ct_theta)
        else:
            new_ct_theta = ct_theta + decay_times(self.weight_decay, ct_a)
        return new_ct_theta, (beta1 * ct_m, beta2 * ct_v), ct_a

    def warn_if_singular(self, t: int, theta: Array, state: State, grad: Array) -> None:
        """Warn where r = √(v̂ + eps_root) is round-off small but not 0 (tolerances.ADAM_V_WARN relative
        to the largest): the derivative through √v̂ amplifies rounding there (class docstring). r = 0
        exactly is exact, no warning."""
        r = self._direction(t, *self._moments(state, self._a(theta, grad)))[3]
        top = float(np.max(r)) if r.size else 0.0
        small = int(np.count_nonzero((r > 0.0) & (r <= ADAM_V_WARN * top)))
        if small:
            warnings.warn(f"step {t}: {small} coordinate(s) of {self.name}'s √(v̂ + eps_root) are nonzero but "
                          f"at most {ADAM_V_WARN:g} of the largest: the derivative through √v̂ (of order "
                          f"1/eps²) amplifies their rounding and the exact influence may be dominated by it "
                          f"there; pass eps_root > 0 to bound it", RuntimeWarning, stacklevel=5)


class AdamW(Adam):
    """AdamW, ``torch.optim.AdamW(params, lr, betas, eps, weight_decay)``: Adam with decoupled weight decay,
    θ ← θ (1 − η_t λ) first (torch's order), and the moments of a_t = g̃_t alone (default λ = 1e-2, torch's).

    Its full-batch fixed point is not SGD's: with m = a and v = a² at stationarity (bias corrections → 1,
    eps_root = 0) the step vanishes where a/(|a| + eps) + λθ = 0 elementwise, a = g̃(θ): `residual()`.
    """

    name = "AdamW"
    decoupled = True

    def __init__(self, lr: float | ArrayLike = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float | ArrayLike = 1e-2, *, eps_root: float = 0.0,
                 amsgrad: bool = False) -> None:
        super().__init__(lr, betas, eps, weight_decay, eps_root=eps_root, amsgrad=amsgrad)

    def residual(self, theta: Array, grad: Array) -> Array:
        """a/(√(a² + eps_root) + eps) + λθ (elementwise, a = g̃): the stationary AdamW step, over η."""
        step = grad / (np.sqrt(grad * grad + self.eps_root) + self.eps)
        return step + decay_times(self.weight_decay, theta)

    def residual_scale(self, theta: Array, grad: Array) -> float | Array:
        """D = d/da [a/(s + eps)] = (eps_root/s + eps)/(s + eps)², s = √(a² + eps_root), elementwise;
        eps/(|a| + eps)² for eps_root = 0 (1/eps at a = 0): tiny where |a| ≫ eps, which is why the AdamW
        root's J = D M + λI is ill-conditioned for a small eps."""
        s = np.sqrt(grad * grad + self.eps_root)
        with np.errstate(divide="ignore", invalid="ignore"):
            inner = np.where(s > 0.0, self.eps_root / s, 0.0)
        return np.asarray((inner + self.eps) / (s + self.eps) ** 2, dtype=np.float64)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def optimizer_from_config(config: dict[str, Any], lr: float | ArrayLike) -> Optimizer:
    """Rebuild an optimizer from `Optimizer.config()` and its learning rate(s)."""
    if not isinstance(config, dict) or config.get("name") not in OPTIMIZERS:
        got = config.get("name") if isinstance(config, dict) else config
        raise InvalidInputError(f"the optimizer configuration must name one of {sorted(OPTIMIZERS)}, "
                                f"got {got!r}")
    fields = {k: v for k, v in config.items() if k != "name"}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return OPTIMIZERS[config["name"]](lr, **fields)


def _check_lr(lr: Any) -> float | Array:
    if np.ndim(lr) == 0:
        return check_positive("lr", lr)
    lrs = check_finite_array("lr", lr, ndim=1).copy()  # a copy: later edits of the caller's array stay theirs
    if lrs.size == 0 or np.any(lrs <= 0):
        raise InvalidInputError("`lr` must be a float > 0 or a non-empty array of floats > 0, got "
                                + ("an empty array" if lrs.size == 0 else f"minimum {float(lrs.min())!r}"))
    return cast("float | Array", lrs)


def _check_weight_decay(weight_decay: Any) -> float | Array:
    if np.ndim(weight_decay) == 0:
        return check_nonnegative("weight_decay", weight_decay)
    lam = check_finite_array("weight_decay", weight_decay, ndim=1).copy()
    if np.any(lam < 0):
        raise InvalidInputError(f"`weight_decay` entries must be >= 0, got minimum {float(lam.min())!r}")
    return cast("float | Array", lam)
