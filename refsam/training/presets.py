"""Named presets: the SAM rule and base optimizer of the public SAM implementations, step for step.

Each preset is refsam's parameters for what that code computes (its conventions, not its code):

``pytorch-sam`` — the widely used PyTorch SAM wrapper (``SAM(params, base_optimizer, rho, adaptive=False)``)
    first step: ε = ρ g / (‖g‖ + 1e-12), ‖g‖ the norm over every parameter tensor together;
    second step: the gradient at θ + ε, θ restored, then the base optimizer's step — ``torch.optim.SGD``
    with momentum (0.9 in its example) and ``weight_decay=λ``, so λθ enters at the unperturbed point
    and goes through the momentum buffer: refsam's ``decoupled`` mode with momentum.
``pytorch-sam-adaptive`` — the same wrapper with ``adaptive=True``
    ε = ρ θ² g / (‖θ g‖ + 1e-12) on every coordinate, biases included: ASAM with T = |θ| (κ = 0).
``asam-official`` — the official ASAM code
    T = |θ| + η (η = 0.01) on weight matrices only (parameters named ``weight``), T = 1 on biases;
    ε = ρ T² g / (‖T g‖ + 1e-16); then SGD with momentum 0.9 and weight decay: ``decoupled`` mode.
    The weights-only T needs the model's bias coordinates (``model.bias_mask``).

``jax-sam`` — the JAX/Flax SAM code of the original paper
    ε = ρ g/‖g‖ (no epsilon) with g the gradient of the loss *including* an L2 penalty ½λ Σ θ_i² on the
    weight matrices only (refsam's ``coupled`` mode with ``decay_biases=False``); m-sharpness: each
    device perturbs with the gradient of its own share of the batch and the devices' gradients at their
    own perturbed points are averaged (``m_sharpness`` = the per-device batch size); Flax's Momentum with
    ``nesterov=True``: buf = β buf + d (from buf = 0), step d + β buf — ``torch.optim.SGD``'s Nesterov.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..objective import Problem
from ..sam import SAM
from ..validation import check_choice
from .step import SGDMomentum

__all__ = ["PRESETS", "Preset", "preset"]

PRESETS = {
    "pytorch-sam": "PyTorch SAM wrapper: ε = ρ g/(‖g‖ + 1e-12), SGD momentum, weight decay in SGD",
    "pytorch-sam-adaptive": "PyTorch SAM wrapper, adaptive=True: ASAM with T = |θ| (κ = 0), ‖Tg‖ + 1e-12",
    "asam-official": "official ASAM code: T = |θ| + 0.01 on weights only, ‖Tg‖ + 1e-16, SGD momentum",
    "jax-sam": "JAX/Flax SAM: coupled L2 on weights only, ε = ρ g/‖g‖, m-sharpness, Nesterov momentum",
}


@dataclass(frozen=True)
class Preset:
    """A public implementation's SAM rule and base optimizer, for one problem."""

    name: str
    sam: SAM
    optimizer: SGDMomentum
    regularization: str  # the weight-decay mode the implementation computes

    def train_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `refsam.train()` that select the base optimizer."""
        o = self.optimizer
        return {"momentum": o.momentum, "dampening": o.dampening, "nesterov": o.nesterov}


def preset(name: str, problem: Problem, rho: float, momentum: float = 0.9, nesterov: bool | None = None,
           m_sharpness: int | None = None) -> Preset:
    """The preset ``name`` (one of `PRESETS`) for ``problem``, radius ``rho``, base-optimizer momentum.

    Use it as ``p = preset("pytorch-sam", problem, 0.05); train(problem, p.sam, lr, steps,
    **p.train_kwargs())``. ``nesterov`` defaults to what the implementation uses (True for ``jax-sam``,
    False otherwise); ``m_sharpness`` (``jax-sam`` only) is the per-device batch size. Raises ValueError if
    ``problem``'s weight decay is not where the implementation puts it: ``decoupled`` mode for the PyTorch
    presets; ``coupled`` mode with no decay on biases for ``jax-sam``.
    """
    name = check_choice("name", name, PRESETS)
    if not isinstance(problem, Problem):
        raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if name == "jax-sam":
        biases = problem.model.bias_mask(problem.p)
        decayed_biases = np.any(np.broadcast_to(problem.weight_decay, biases.shape)[biases])
        if problem.regularization != "coupled" or decayed_biases:
            raise InvalidInputError(
                "preset 'jax-sam' puts an L2 penalty on the weight matrices only into the loss: "
                "build the problem with regularization='coupled', decay_biases=False")
        sam = SAM(rho, "sam", m_sharpness=m_sharpness)
        optimizer = SGDMomentum(momentum, 0.0, True if nesterov is None else nesterov)
        return Preset(name, sam, optimizer, "coupled")
    if m_sharpness is not None:
        raise InvalidInputError(f"`m_sharpness` applies to the 'jax-sam' preset only, got preset {name!r}")
    nesterov = False if nesterov is None else nesterov
    if problem.regularization != "decoupled":
        raise InvalidInputError(f"preset {name!r} computes weight decay in the optimizer (decoupled mode); "
                         f"`problem` has regularization={problem.regularization!r}")
    if name == "pytorch-sam":
        sam = SAM(rho, "sam", norm_eps=1e-12)
    elif name == "pytorch-sam-adaptive":
        sam = SAM(rho, "asam", kappa=0.0, norm_eps=1e-12)
    else:  # asam-official: weights only
        sam = SAM(rho, "asam", kappa=0.01, norm_eps=1e-16, t_mask=~problem.model.bias_mask(problem.p))
    return Preset(name, sam, SGDMomentum(momentum, 0.0, nesterov), "decoupled")
