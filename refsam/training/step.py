"""One SAM step and the descent direction G it follows: the same equation for training and fixed points.

With λ_in, λ_out from :meth:`~refsam.Problem.weight_decay_split` (λ_in = λ in coupled mode, λ_out = λ
in decoupled mode, the other 0), on batch B with sample weights w:

    g  = ∇F_{B,w}(θ) + λ_in θ                    the gradient the perturbation is built from
    ε  = ε(θ; g)                                 the SAM rule (refsam.sam)
    ŵ  = θ + ε                                   the perturbed point
    G  = ∇F_{B,w}(ŵ) + λ_in ŵ + λ_out θ          the descent direction
    θ' = θ − η G                                 one SAM step

decoupled:  g = ∇F(θ),        G = ∇F(ŵ) + λθ       (PyTorch SAM + SGD(weight_decay=λ))
coupled:    g = ∇F(θ) + λθ,   G = ∇F(ŵ) + λŵ       (r(θ) = (λ/2)‖θ‖² is part of the loss everywhere)

On the full batch, G(θ; w) is the residual whose roots are the SAM fixed points
(:mod:`refsam.influence.fixed_point`). ρ = 0 gives ε = 0 exactly, so the step is exactly (S)GD.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..objective import Problem
from ..sam import SAM

__all__ = ["StepTerms", "descent_direction", "sam_step"]

Array = NDArray[np.float64]


class StepTerms(NamedTuple):
    """The terms of one step at θ (module docstring), each shape (d,)."""

    g: Array  # the perturbation's gradient
    eps: Array  # ε(θ; g)
    w_hat: Array  # ŵ = θ + ε
    direction: Array  # G


def descent_direction(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None = None,
                      weights: ArrayLike | None = None) -> StepTerms:
    """g, ε, ŵ and G at θ on batch ``idx`` (None: full batch); trusts its inputs. Cost: two gradients."""
    lam_in, lam_out = problem.weight_decay_split()
    g = problem.grad(theta, idx, weights) + lam_in * theta
    eps = sam.perturbation(theta, g)
    w_hat = theta + eps
    direction = problem.grad(w_hat, idx, weights) + lam_in * w_hat + lam_out * theta
    return StepTerms(g, eps, w_hat, direction)


def sam_step(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None, lr: float,
             weights: ArrayLike | None = None) -> tuple[Array, Array]:
    """One SAM step θ − η G(θ) on batch ``idx`` (module docstring). Returns (θ_{t+1}, ε_t)."""
    terms = descent_direction(problem, sam, theta, idx, weights)
    return theta - lr * terms.direction, terms.eps
