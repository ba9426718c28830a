"""SAM perturbation rules ε(θ; g) and their hand-derived Jacobians (docs/contract.md §2).

Conventions
-----------
* ``g`` is the gradient the perturbation is built from: ∇F_B(θ) in decoupled mode, ∇(F_B + r)(θ) in
  coupled mode (the training layer decides; this module only sees g).
* Rules, with radius ρ ≥ 0:
      SAM   ε = ρ g/‖g‖                      ∂ε/∂g = (ρ/‖g‖)(I − u uᵀ),   u = g/‖g‖
      USAM  ε = ρ g                          ∂ε/∂g = ρ I
      ASAM  ε = ρ T² g/‖T g‖, T = diag(|θ| + κ)
            ∂ε/∂g = (ρ/‖s‖) T (I − u uᵀ) T,  s = T g, u = s/‖s‖
            ∂ε/∂θ|_g = ρ diag(2 t g sgnθ)/‖s‖ − ρ (t² g)(t g² sgnθ)ᵀ/‖s‖³     (t = |θ| + κ)
  Only ASAM depends on θ other than through g; for SAM and USAM ∂ε/∂θ|_g = 0.
  The total derivative used by the influence methods is  dε/dθ = ∂ε/∂g · ∂g/∂θ + ∂ε/∂θ|_g.
* ‖g‖ = 0 (or ‖Tg‖ = 0) makes SAM and ASAM undefined: :class:`ZeroGradientError` is raised rather than
  dividing by zero. ρ = 0 gives ε = 0 exactly for every rule (training reduces to (S)GD).
* Perturbations are written in autograd.numpy so the autodiff oracle can differentiate through them;
  Jacobians are plain NumPy, shape (d, d); ``*_vjp``/``*_jvp`` apply them to a vector in O(d).
See docs/sam_rules.md for the derivations.
"""

from __future__ import annotations

from typing import Any

import autograd.numpy as anp
import numpy as np
from numpy.typing import NDArray

from .validation import check_choice, check_nonnegative, check_positive

__all__ = ["RULES", "SAM", "ZeroGradientError"]

RULES = ("sam", "usam", "asam")

Array = NDArray[np.float64]


class ZeroGradientError(FloatingPointError):
    """The SAM (or ASAM) perturbation ρ g/‖g‖ is undefined because the gradient is exactly zero."""


class SAM:
    """A perturbation rule with radius ``rho``.

    Parameters
    ----------
    rho : float >= 0
        Perturbation radius ρ. ρ = 0 makes every rule plain (S)GD.
    rule : {"sam", "usam", "asam"}
    kappa : float > 0
        κ in ASAM's T = diag(|θ| + κ) (ignored by the other rules). Default 0.01 (Kwon et al., 2021).
    """

    def __init__(self, rho: float, rule: str = "sam", kappa: float = 0.01) -> None:
        self.rho = check_nonnegative("rho", rho)
        self.rule = check_choice("rule", rule, RULES)
        self.kappa = check_positive("kappa", kappa)

    def config(self) -> dict[str, Any]:
        return {"rho": self.rho, "rule": self.rule, "kappa": self.kappa}

    def __repr__(self) -> str:
        extra = f", kappa={self.kappa}" if self.rule == "asam" else ""
        return f"SAM(rho={self.rho}, rule={self.rule!r}{extra})"

    # -- the perturbation --------------------------------------------------------------------------
    def _norm(self, norm_value: float, what: str) -> None:
        if norm_value == 0.0:
            raise ZeroGradientError(
                f"the {self.rule.upper()} perturbation ρ·{what} is undefined: the gradient is exactly "
                f"zero. Use rho=0, rule='usam', or start from a point with a non-zero gradient."
            )

    def perturbation(self, theta: Any, g: Any) -> Any:
        """ε(θ; g), shape (d,). autograd-differentiable in θ and g (away from ‖g‖ = 0)."""
        if self.rho == 0.0:
            return 0.0 * g
        if self.rule == "usam":
            return self.rho * g
        if self.rule == "sam":
            norm = anp.sqrt(anp.dot(g, g))
            self._norm(_value(norm), "g/‖g‖")
            return self.rho * g / norm
        t = anp.abs(theta) + self.kappa  # diagonal of T
        norm = anp.sqrt(anp.sum((t * g) ** 2))  # ‖T g‖
        self._norm(_value(norm), "T²g/‖Tg‖")
        return self.rho * t**2 * g / norm

    # -- Jacobians ---------------------------------------------------------------------------------
    def jacobian_g(self, theta: Array, g: Array) -> Array:
        """∂ε/∂g, shape (d, d). Symmetric for every rule."""
        d = g.shape[0]
        if self.rho == 0.0:
            return np.zeros((d, d))
        if self.rule == "usam":
            return self.rho * np.eye(d)
        scale, t, u = self._g_factors(theta, g)
        return scale * t[:, None] * (np.eye(d) - np.outer(u, u)) * t[None, :]

    def jacobian_theta(self, theta: Array, g: Array) -> Array:
        """∂ε/∂θ at fixed g, shape (d, d): ASAM's T term; zero for SAM and USAM."""
        d = g.shape[0]
        if self.rho == 0.0 or self.rule != "asam":
            return np.zeros((d, d))
        diag, left, right = self._theta_factors(theta, g)
        return np.diag(diag) - np.outer(left, right)

    def jvp_g(self, theta: Array, g: Array, v: Array) -> Array:
        """(∂ε/∂g) v in O(d) per column; ``v`` is (d,) or a block (d, k)."""
        if self.rho == 0.0:
            return np.zeros_like(v)
        if self.rule == "usam":
            return self.rho * v
        scale, t, u = self._g_factors(theta, g)
        t, u_col = _column(t, v), _column(u, v)
        tv = t * v
        return scale * t * (tv - u_col * (u @ tv))

    def vjp_g(self, theta: Array, g: Array, v: Array) -> Array:
        """(∂ε/∂g)ᵀ v in O(d); equals ``jvp_g`` since ∂ε/∂g is symmetric."""
        return self.jvp_g(theta, g, v)

    def jvp_theta(self, theta: Array, g: Array, v: Array) -> Array:
        """(∂ε/∂θ|_g) v in O(d); zero for SAM and USAM."""
        if self.rho == 0.0 or self.rule != "asam":
            return np.zeros_like(v)
        diag, left, right = self._theta_factors(theta, g)
        return _column(diag, v) * v - _column(left, v) * (right @ v)

    def vjp_theta(self, theta: Array, g: Array, v: Array) -> Array:
        """(∂ε/∂θ|_g)ᵀ v in O(d); zero for SAM and USAM."""
        if self.rho == 0.0 or self.rule != "asam":
            return np.zeros_like(v)
        diag, left, right = self._theta_factors(theta, g)
        return _column(diag, v) * v - _column(right, v) * (left @ v)

    def _g_factors(self, theta: Array, g: Array) -> tuple[float, Array, Array]:
        """(ρ/‖s‖, t, u) with ∂ε/∂g = (ρ/‖s‖) T (I − u uᵀ) T, s = T g, u = s/‖s‖ (T = I for SAM)."""
        t = self._t(theta, g.shape[0])
        s = t * g
        norm = float(np.linalg.norm(s))
        self._norm(norm, "g/‖g‖")
        return float(self.rho / norm), t, s / norm

    def _theta_factors(self, theta: Array, g: Array) -> tuple[Array, Array, Array]:
        """ASAM's (a, b, c) with ∂ε/∂θ|_g = diag(a) − b cᵀ:
        a = 2ρ t g sgnθ/‖s‖,  b = ρ t² g/‖s‖³,  c = t g² sgnθ   (t = |θ| + κ, s = t g)."""
        t = np.abs(theta) + self.kappa
        sgn = np.sign(theta)
        norm = float(np.linalg.norm(t * g))
        self._norm(norm, "T²g/‖Tg‖")
        return 2.0 * self.rho * t * g * sgn / norm, self.rho * t**2 * g / norm**3, t * g**2 * sgn

    def d_rho(self, theta: Array, g: Array) -> Array:
        """∂ε/∂ρ = ε/ρ (every rule is linear in ρ), shape (d,)."""
        return SAM(1.0, self.rule, self.kappa).perturbation(theta, g)

    def _t(self, theta: Array, d: int) -> Array:
        """Diagonal of T: |θ| + κ for ASAM, ones for SAM (so SAM is ASAM with T = I)."""
        if self.rule == "asam":
            return np.abs(theta) + self.kappa
        return np.ones(d)


def _column(a: Array, v: Array) -> Array:
    """``a`` (d,) shaped to multiply ``v``: itself for a vector, a (d, 1) column for a block (d, k)."""
    return a if v.ndim == 1 else a[:, None]


def _value(x: Any) -> float:
    """The float inside an autograd box (or x itself)."""
    while hasattr(x, "_value"):
        x = x._value
    return float(x)
