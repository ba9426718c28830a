"""The independent oracle: autograd through a re-implementation of the training loop.

The loop below is written from `refsam.Problem.objective()` and `refsam.SAM.perturbation()`
only — none of the hand-written gradients, Hessians, Jacobians or recursions, and not the training
layer's step function — so it shares nothing with the methods it checks but the loss and the rule:

    decoupled:  g = ∇F_{B_t,w}(θ_t),        d_t = ∇F_{B_t,w}(θ_t + ε) + λ θ_t
    coupled:    g = ∇F_{B_t,w}(θ_t) + λθ_t, d_t = ∇F_{B_t,w}(θ_t + ε) + λ (θ_t + ε)
    with ε = ε(θ_t; g), then torch.optim.SGD's update, written out again here:
    μ = 0:      θ_{t+1} = θ_t − η_t d_t
    μ > 0:      buf = d_0 at the first step, else μ buf + (1 − τ) d_t;
                θ_{t+1} = θ_t − η_t (d_t + μ buf  if Nesterov,  else buf)
    m-sharpness: the batch order cut into runs of m samples, each perturbed by its own gradient, and
    d_t = Σ_C (|C|/|B|) (∇F_{C,w}(θ_t + ε_C) + λ_in (θ_t + ε_C)) + λ_out θ_t.
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

    ``problem`` must already carry the run's weights (its data and λ are what the loop uses).
    """
    sam = trajectory.sam()
    coupled = problem.regularization == "coupled"
    lam = problem.weight_decay
    mu, tau = trajectory.config["momentum"], trajectory.config["dampening"]
    nesterov = trajectory.config["nesterov"]
    grad_objective = ag_grad(problem.objective)  # ∇_θ F_{B,w}(θ), differentiable in w too

    m = sam.m_sharpness

    def direction(theta: Any, idx: Any, w: Any) -> Any:  # the SAM direction on one set of samples
        g = grad_objective(theta, idx, w)
        if coupled:
            g = g + lam * theta
        w_hat = theta + sam.perturbation(theta, g)
        return grad_objective(w_hat, idx, w) + (lam * w_hat if coupled else 0.0)

    def final_output(w: Any) -> Any:
        theta, buf = trajectory.theta0, None
        for idx, lr in zip(trajectory.batches, trajectory.lrs):
            if m is None or len(idx) <= m:
                descent = direction(theta, idx, w)
            else:
                descent = sum(len(idx[lo:lo + m]) / len(idx) * direction(theta, idx[lo:lo + m], w)
                              for lo in range(0, len(idx), m))
            descent = descent + (0.0 if coupled else lam * theta)
            if mu == 0:
                theta = theta - lr * descent
                continue
            buf = descent if buf is None else mu * buf + (1.0 - tau) * descent
            theta = theta - lr * (descent + mu * buf if nesterov else buf)
        return output(theta)

    return np.asarray(ag_jacobian(final_output)(anp.array(trajectory.weights))).T
