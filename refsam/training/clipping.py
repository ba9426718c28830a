"""Gradient clipping by the global norm, between the SAM descent gradient and the base optimizer.

Conventions
-----------
The PyTorch SAM wrapper and the JAX SAM code clip the descent gradient g̃ (the gradient at the perturbed
point, with the loss's own L2 term; never the optimizer's weight decay, which the optimizer adds after)
to a maximum global norm c, as ``torch.nn.utils.clip_grad_norm_`` or ``optax.clip_by_global_norm`` do:

    torch:  s = min(1, c / (‖g̃‖ + δ)),  δ = 1e-6        (clipped where ‖g̃‖ + δ > c)
    optax:  s = c / max(‖g̃‖, c),        δ = 0           (clipped where ‖g̃‖ > c)
    g̃ ← s g̃

The map is smooth away from its kink (‖g̃‖ + δ = c); on the clipped side its Jacobian is symmetric,

    ∂(s g̃)/∂g̃ = s (I − g̃ g̃ᵀ / (‖g̃‖ (‖g̃‖ + δ))),

and the identity on the other. refsam differentiates the side the step is on and warns when ‖g̃‖ + δ is
within round-off of c (`KINK_WARN` relative), where the one-sided derivatives differ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ..validation import check_choice, check_positive

__all__ = ["CLIP_CONVENTIONS", "GradientClipping", "check_clipping"]

Array = NDArray[np.float64]

CLIP_CONVENTIONS = {"torch": 1e-6, "optax": 0.0}  # δ in the denominator, by convention
KINK_WARN = 1e-12  # |‖g̃‖ + δ − c| below this fraction of c: the step sits on the kink, to round-off


@dataclass(frozen=True)
class GradientClipping:
    """Clip the descent gradient to global norm ``max_norm`` under ``convention`` ("torch" or "optax")."""

    max_norm: float
    convention: str = "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_norm", check_positive("clip_grad_norm", self.max_norm))
        object.__setattr__(self, "convention", check_choice("convention", self.convention, CLIP_CONVENTIONS))

    @property
    def delta(self) -> float:
        return CLIP_CONVENTIONS[self.convention]

    def config(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "convention": self.convention}

    def factor(self, norm: Array | float) -> Any:
        """s for a norm (or an array of column norms): 1 on the unclipped side."""
        norm = np.asarray(norm, dtype=np.float64)
        if self.convention == "torch":
            return np.minimum(1.0, self.max_norm / (norm + self.delta))
        return self.max_norm / np.maximum(norm, self.max_norm)

    def apply(self, g: Array) -> Array:
        """s g̃ for g̃ (d,), or per column for a block (d, K) of runs."""
        norms = scipy.linalg.norm(g) if g.ndim == 1 else np.linalg.norm(g, axis=0)
        return np.asarray(g * self.factor(norms), dtype=np.float64)

    def clipped(self, g: Array) -> bool:
        """True where the step is on the clipped side (s < 1), for g̃ (d,)."""
        return bool(self.factor(float(scipy.linalg.norm(g))) < 1.0)

    def jvp(self, g: Array, V: Array) -> Array:
        """∂(s g̃)/∂g̃ V for a block V (d, k) (module docstring); also the VJP (the Jacobian is symmetric)."""
        norm = float(scipy.linalg.norm(g))
        s = float(self.factor(norm))
        if s >= 1.0:
            return V
        u = g / norm
        return s * (V - (norm / (norm + self.delta)) * np.outer(u, u @ V))

    vjp = jvp

    def warn_if_on_kink(self, g: Array, t: int) -> None:
        norm = float(scipy.linalg.norm(g))
        gap = abs(norm + self.delta - self.max_norm)
        if gap <= KINK_WARN * self.max_norm:
            warnings.warn(f"step {t}: ‖g̃‖ + δ = {norm + self.delta:.17g} is within round-off of the "
                          f"clipping threshold c = {self.max_norm:g} ({self.convention} convention): the "
                          f"clip's one-sided derivatives differ there, and the exact influence takes the "
                          f"side rounding chose", RuntimeWarning, stacklevel=4)


def check_clipping(clip_grad_norm: object) -> GradientClipping | None:
    """``train``'s ``clip_grad_norm``: None, a float c (torch's convention), or a GradientClipping."""
    if clip_grad_norm is None or isinstance(clip_grad_norm, GradientClipping):
        return clip_grad_norm
    number = (int, float, np.integer, np.floating)
    if isinstance(clip_grad_norm, bool) or not isinstance(clip_grad_norm, number):
        raise InvalidInputError(f"`clip_grad_norm` must be None, a float > 0 (torch's clip_grad_norm_) or a "
                                f"refsam.GradientClipping, got {type(clip_grad_norm).__name__}")
    return GradientClipping(float(clip_grad_norm))


def clipping_from_config(config: dict[str, Any] | None) -> GradientClipping | None:
    """A run's clipping from its configuration (None: no clipping)."""
    return None if config is None else GradientClipping(config["max_norm"], config["convention"])
