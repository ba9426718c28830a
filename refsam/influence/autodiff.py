"""The independent oracle: autograd through a re-implementation of the training loop.

The loop below is written from `refsam.Problem.objective()` and the rule's value functions
(`SAM.at_step`, `perturbation_input`, `perturbation`, `descent`, `next_rule_state`) only — none of the
hand-written gradients, Hessians, Jacobians or recursions, and not the training layer's step function —
so it shares nothing with the methods it checks but the loss and the rule's formulas:

    g = ∇F_{B_t,w}(θ_t) + λ₂θ_t,   u = g (Friendly SAM: g − σ m),   ε = ε(θ_t; u),
    g^p = ∇F_{B_t,w}(θ_t + ε) + λ₂ (θ_t + ε),   d_t = φ(g, g^p) + λ θ_t,   m ← next state
    (λ₂ the loss's ``l2``, λ the optimizer's ``weight_decay``, read from the run's configuration; the
    rule of step t, φ its direction), then torch.optim.SGD's update, written out again here:
    μ = 0:      θ_{t+1} = θ_t − η_t d_t
    μ > 0:      buf = d_0 at the first step, else μ buf + (1 − τ) d_t;
                θ_{t+1} = θ_t − η_t (d_t + μ buf  if Nesterov,  else buf)
    m-sharpness: the batch order cut into runs of m samples, each perturbed by its own gradient, and
    d_t = Σ_C (|C|/|B|) (∇F_{C,w}(θ_t + ε_C) + λ₂ (θ_t + ε_C)) + λ θ_t.
    Adam/AdamW (torch.optim.Adam/AdamW, optax's eps_root), with g̃_t the descent gradient above (no λθ):
    a = g̃ + λθ (Adam) or g̃ (AdamW, after θ ← θ(1 − ηλ));  m = β₁m + (1−β₁)a;  v = β₂v + (1−β₂)a²;
    θ ← θ − η (m/(1−β₁^{t+1})) / (√(v/(1−β₂^{t+1}) + eps_root) + eps).
    Clipping of g̃ to norm c before the optimizer: g̃ · min(1, c/(‖g̃‖ + 1e-6)) (torch) or g̃ · c/max(‖g̃‖, c)
    (optax).
    Slow: an O(T) tape and one reverse pass per output coordinate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad
from autograd import jacobian as ag_jacobian
from numpy.typing import NDArray

from ..objective import Problem
from ..training import Trajectory

__all__ = ["autodiff_through_training"]


def autodiff_through_training(problem: Problem, trajectory: Trajectory,
                              output: Callable[[Any], Any]) -> NDArray[np.float64]:
    """Jacobian of output(θ_T(w)) with respect to w at ``trajectory.weights``, transposed: (n, dim output).

    ``problem`` must already carry the run's weights (its data and λ₂ are what the loop uses).
    """
    sam = trajectory.sam()
    settings = trajectory.config["optimizer"]
    l2 = problem.l2
    lam = np.asarray(settings["weight_decay"], dtype=np.float64)
    grad_objective = ag_grad(problem.objective)  # ∇_θ F_{B,w}(θ), differentiable in w too

    m = sam.m_sharpness

    def direction(rule: Any, theta: Any, idx: Any, w: Any, state: Any) -> Any:  # on one set of samples
        g = grad_objective(theta, idx, w) + l2 * theta
        w_hat = theta + rule.perturbation(theta, rule.perturbation_input(g, state))
        g_p = grad_objective(w_hat, idx, w) + l2 * w_hat
        return rule.descent(g, g_p), rule.next_rule_state(g, state)

    clip = trajectory.config.get("clip_grad_norm")
    rule_states: list[Any] = [np.zeros_like(trajectory.theta0) if sam.state_names else None]

    def descent_gradient(t: int, theta: Any, idx: Any, w: Any) -> Any:
        rule = sam.at_step(t)
        if m is None or len(idx) <= m:
            g, rule_states[0] = direction(rule, theta, idx, w, rule_states[0])
        else:
            g = sum(len(idx[lo:lo + m]) / len(idx) * direction(rule, theta, idx[lo:lo + m], w, None)[0]
                    for lo in range(0, len(idx), m))
        if clip is None:
            return g
        norm = anp.sqrt(anp.sum(g * g))
        if clip["convention"] == "torch":
            return g * anp.minimum(1.0, clip["max_norm"] / (norm + 1e-6))
        return g * (clip["max_norm"] / anp.maximum(norm, clip["max_norm"]))

    def final_output(w: Any) -> Any:
        rule_states[0] = np.zeros_like(trajectory.theta0) if sam.state_names else None
        if settings["name"] == "SGD":
            theta = sgd_loop(w)
        else:
            theta = adam_loop(w, decoupled=settings["name"] == "AdamW")
        return output(theta)

    def sgd_loop(w: Any) -> Any:
        mu, tau, nesterov = settings["momentum"], settings["dampening"], settings["nesterov"]
        theta, buf = trajectory.theta0, None
        for t, (idx, lr) in enumerate(zip(trajectory.batches, trajectory.lrs)):
            descent = descent_gradient(t, theta, idx, w) + lam * theta
            if mu == 0:
                theta = theta - lr * descent
                continue
            buf = descent if buf is None else mu * buf + (1.0 - tau) * descent
            theta = theta - lr * (descent + mu * buf if nesterov else buf)
        return theta

    def adam_loop(w: Any, decoupled: bool) -> Any:
        beta1, beta2 = settings["betas"]
        eps, eps_root = settings["eps"], settings["eps_root"]
        theta = trajectory.theta0
        m_t = v_t = np.zeros_like(trajectory.theta0)
        for t, (idx, lr) in enumerate(zip(trajectory.batches, trajectory.lrs)):
            g = descent_gradient(t, theta, idx, w)
            if decoupled:
                theta = theta - lr * lam * theta
                a = g
            else:
                a = g + lam * theta
            m_t = beta1 * m_t + (1.0 - beta1) * a
            v_t = beta2 * v_t + (1.0 - beta2) * a * a
            m_hat = m_t / (1.0 - beta1 ** (t + 1))
            v_hat = v_t / (1.0 - beta2 ** (t + 1))
            theta = theta - lr * m_hat / (anp.sqrt(v_hat + eps_root) + eps)
        return theta

    jacobian = ag_jacobian(final_output)(anp.array(trajectory.weights))  # (dim output, n)
    return np.ascontiguousarray(np.asarray(jacobian, dtype=np.float64).T)
