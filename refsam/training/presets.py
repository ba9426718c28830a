"""Named presets: the SAM rule and base optimizer of the public SAM implementations, step for step.

Each preset is refsam's parameters for what that code computes (its conventions, not its code):

``pytorch-sam`` — the widely used PyTorch SAM wrapper (``SAM(params, base_optimizer, rho, adaptive=False)``)
    first step: ε = ρ g / (‖g‖ + 1e-12), ‖g‖ the norm over every parameter tensor together;
    second step: the gradient at θ + ε, θ restored, then the base optimizer's step — ``torch.optim.SGD``
    with momentum (0.9 in its example) and ``weight_decay=λ``, so λθ enters at the unperturbed point
    and goes through the momentum buffer: ``refsam.SGD(lr, momentum, weight_decay=λ)``.
``pytorch-sam-adaptive`` — the same wrapper with ``adaptive=True``
    ε = ρ θ² g / (‖θ g‖ + 1e-12) on every coordinate, biases included: ASAM with T = |θ| (κ = 0).
``asam-official`` — the official ASAM code
    T = |θ| + η (η = 0.01) on weight matrices only (parameters named ``weight``), T = 1 on biases;
    ε = ρ T² g / (‖T g‖ + 1e-16); then SGD with momentum 0.9 and weight decay in the optimizer.
    The weights-only T needs the model's bias coordinates (``model.bias_mask``).

``jax-sam`` — the JAX/Flax SAM code of the original paper
    ε = ρ g/‖g‖ (no epsilon) with g the gradient of the loss *including* an L2 penalty ½λ Σ θ_i² on the
    weight matrices only (``Problem(l2=…)`` with λ_i = 0 on the biases); m-sharpness: each
    device perturbs with the gradient of its own share of the batch and the devices' gradients at their
    own perturbed points are averaged (``m_sharpness`` = the per-device batch size); Flax's Momentum with
    ``nesterov=True``: buf = β buf + d (from buf = 0), step d + β buf — ``torch.optim.SGD``'s Nesterov.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InvalidInputError
from ..objective import Problem, check_problem
from ..sam import SAM
from ..validation import check_choice, check_nonnegative
from .optimizers import SGD

__all__ = ["PRESETS", "Preset", "preset"]

PRESETS = {
    "pytorch-sam": "PyTorch SAM wrapper: ε = ρ g/(‖g‖ + 1e-12), SGD momentum, weight decay in SGD",
    "pytorch-sam-adaptive": "PyTorch SAM wrapper, adaptive=True: ASAM with T = |θ| (κ = 0), ‖Tg‖ + 1e-12",
    "asam-official": "official ASAM code: T = |θ| + 0.01 on weights only, ‖Tg‖ + 1e-16, SGD momentum",
    "jax-sam": "JAX/Flax SAM: L2 on weights only in the loss, ε = ρ g/‖g‖, m-sharpness, Nesterov momentum",
}


@dataclass(frozen=True)
class Preset:
    """A public implementation's problem (where its L2 term sits), SAM rule and base optimizer:
    ``train(p.problem, p.sam, p.optimizer, steps)``."""

    name: str
    problem: Problem
    sam: SAM
    optimizer: SGD


def preset(name: str, problem: Problem, rho: float, lr: float | ArrayLike, weight_decay: float = 0.0,
           momentum: float = 0.9, nesterov: bool | None = None, m_sharpness: int | None = None) -> Preset:
    """The preset ``name`` (one of :data:`PRESETS`) for ``problem``, radius ``rho``, learning rate ``lr``,
    weight decay λ = ``weight_decay`` and base-optimizer momentum.

    Use it as ``p = preset("pytorch-sam", problem, 0.05, lr=0.1, weight_decay=5e-4); train(p.problem,
    p.sam, p.optimizer, steps)``. λ goes where the implementation puts it: into ``SGD(weight_decay=λ)``
    for the PyTorch presets, into the loss on the weight matrices only (``problem`` with ``l2``) for
    ``jax-sam``. ``nesterov`` defaults to what the implementation uses (True for ``jax-sam``, False
    otherwise); ``m_sharpness`` (``jax-sam`` only) is the per-device batch size. ``problem`` must not carry
    an ``l2`` term of its own.
    """
    name = check_choice("name", name, PRESETS)
    problem = check_problem(problem)
    lam = check_nonnegative("weight_decay", weight_decay)
    if np.any(problem.l2):
        raise InvalidInputError(f"preset {name!r} places the weight decay itself: build `problem` without "
                                f"`l2` and pass `weight_decay` to the preset")
    if name == "jax-sam":
        weights_only = np.where(problem.model.bias_mask(problem.p), 0.0, lam)
        with_l2 = Problem(problem.model, problem.X, problem.y, problem.weights, l2=weights_only)
        sam = SAM(rho, "sam", m_sharpness=m_sharpness)
        return Preset(name, with_l2, sam, SGD(lr, momentum, 0.0, True if nesterov is None else nesterov))
    if m_sharpness is not None:
        raise InvalidInputError(f"`m_sharpness` applies to the 'jax-sam' preset only, got preset {name!r}")
    optimizer = SGD(lr, momentum, 0.0, False if nesterov is None else nesterov, weight_decay=lam)
    if name == "pytorch-sam":
        sam = SAM(rho, "sam", norm_eps=1e-12)
    elif name == "pytorch-sam-adaptive":
        sam = SAM(rho, "asam", kappa=0.0, norm_eps=1e-12)
    else:  # asam-official: weights only
        sam = SAM(rho, "asam", kappa=0.01, norm_eps=1e-16, t_mask=~problem.model.bias_mask(problem.p))
    return Preset(name, problem, sam, optimizer)
