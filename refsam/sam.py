"""SAM perturbation rules ε(θ; g) and their hand-derived Jacobians (docs/contract.md §2).

Conventions
-----------
* ``g`` is the gradient the perturbation is built from: ∇F_B(θ) in decoupled mode, ∇(F_B + r)(θ) in
  coupled mode (the training layer decides; this module only sees g).
* Rules, with radius ρ ≥ 0, the denominator epsilon e ≥ 0 (``norm_eps``; 0 by default) and, for ASAM,
  T = diag(t), t_i = |θ_i| + κ on the coordinates of ``t_mask`` (all by default) and t_i = 1 elsewhere:

      SAM   ε = ρ g/(‖g‖ + e)              (SAM is ASAM with T = I)
      USAM  ε = ρ g                        ∂ε/∂g = ρ I
      ASAM  ε = ρ T² g/(‖s‖ + e),  s = T g

  With n = ‖s‖, q = n + e and u = s/n:
      ∂ε/∂g      = (ρ/q) T (I − (n/q) u uᵀ) T                            (symmetric; e = 0: the projector)
      ∂ε/∂θ|_g   = diag(a) − b cᵀ,   a = 2ρ t g σ/q,   b = ρ t² g/(q² n),   c = t g² σ
  where σ_i = sgn(θ_i) on the masked coordinates and 0 elsewhere (so dt_i/dθ_i = σ_i). With κ = 0
  (T = |θ|, the PyTorch SAM wrapper's adaptive mode) t_i σ_i = θ_i: the rule is smooth in θ, and at
  θ_i = 0 both a_i and c_i are 0 — the derivative of θ_i². Only ASAM depends on θ other than through g.
  The total derivative the influence methods use is dε/dθ = ∂ε/∂g · ∂g/∂θ + ∂ε/∂θ|_g.
* ‖g‖ = 0 (or ‖Tg‖ = 0) with e = 0 makes SAM and ASAM undefined: `ZeroGradientError` is raised
  rather than dividing by zero. With e > 0 a zero gradient gives ε = 0 (and ∂ε/∂g = (ρ/e) T²).
  ρ = 0 gives ε = 0 exactly for every rule (training reduces to (S)GD).
* Perturbations are written in autograd.numpy so the autodiff oracle can differentiate through them;
  Jacobians are plain NumPy, shape (d, d); ``*_vjp``/``*_jvp`` apply them in O(d) per column.
See docs/sam_rules.md for the derivations.
"""

from __future__ import annotations

from typing import Any

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InvalidInputError, RefsamError
from .validation import check_choice, check_nonnegative, check_positive_int

__all__ = ["RULES", "SAM", "ZeroGradientError", "check_sam"]

RULES = ("sam", "usam", "asam")

Array = NDArray[np.float64]


class ZeroGradientError(RefsamError, FloatingPointError):
    """The SAM (or ASAM) perturbation ρ g/‖g‖ is undefined because the gradient is exactly zero."""


class SAM:
    """A perturbation rule with radius ``rho``.

    Parameters
    ----------
    rho : float >= 0
        Perturbation radius ρ. ρ = 0 makes every rule plain (S)GD.
    rule : {"sam", "usam", "asam"}
    kappa : float >= 0
        κ in ASAM's T = diag(|θ| + κ) (ignored by the other rules). Default 0.01 (Kwon et al., 2021);
        κ = 0 is T = |θ|, the PyTorch SAM wrapper's adaptive mode.
    norm_eps : float >= 0
        e in the denominator ‖Tg‖ + e: 1e-12 in the PyTorch SAM wrapper, 1e-16 in the official ASAM code,
        0 (the default) in the papers.
    t_mask : bool array (d,), optional
        ASAM only: the coordinates that get t = |θ| + κ; the others get t = 1 (the official ASAM code
        scales weight matrices only: ``~model.bias_mask(p)``). Default: every coordinate.
    m_sharpness : int >= 1, optional
        m-sharpness (the original SAM paper and its JAX code): each batch is cut into consecutive chunks
        of m samples, each chunk gets its own ε from its own gradient, and the step's direction averages
        the chunks' directions at their own perturbed points (weighted by chunk size). None: one ε per
        batch. The training and trajectory layers apply it (`refsam.training.step`).
    """

    def __init__(self, rho: float, rule: str = "sam", kappa: float = 0.01, norm_eps: float = 0.0,
                 t_mask: ArrayLike | None = None, m_sharpness: int | None = None) -> None:
        self.rho = check_nonnegative("rho", rho)
        self.rule = check_choice("rule", rule, RULES)
        self.kappa = check_nonnegative("kappa", kappa)
        self.norm_eps = check_nonnegative("norm_eps", norm_eps)
        self.m_sharpness = None if m_sharpness is None else check_positive_int("m_sharpness", m_sharpness)
        self.t_mask: NDArray[np.bool_] | None = None
        if t_mask is not None:
            mask = np.asarray(t_mask)
            if mask.ndim != 1 or mask.dtype != bool:
                raise InvalidInputError(f"`t_mask` must be a 1-d bool array (one entry per parameter), got "
                                 f"{mask.dtype} of shape {mask.shape}")
            if rule != "asam":
                raise InvalidInputError(f"`t_mask` applies to rule='asam' only, got rule={rule!r}")
            self.t_mask = mask.copy()

    def config(self) -> dict[str, Any]:
        """The rule's configuration, JSON-able (recorded by trajectories and reference cases)."""
        out: dict[str, Any] = {"rho": self.rho, "rule": self.rule, "kappa": self.kappa}
        if self.norm_eps:
            out["norm_eps"] = self.norm_eps
        if self.t_mask is not None:
            out["t_mask"] = [bool(v) for v in self.t_mask]
        if self.m_sharpness is not None:
            out["m_sharpness"] = self.m_sharpness
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SAM:
        """The rule of a recorded `config()` (missing keys: the defaults)."""
        return cls(config["rho"], config["rule"], config["kappa"], config.get("norm_eps", 0.0),
                   config.get("t_mask"), config.get("m_sharpness"))

    def __repr__(self) -> str:
        extra = f", kappa={self.kappa}" if self.rule == "asam" else ""
        extra += f", norm_eps={self.norm_eps}" if self.norm_eps else ""
        if self.t_mask is not None:
            extra += f", t_mask=<{int(self.t_mask.sum())} of {self.t_mask.size}>"
        if self.m_sharpness is not None:
            extra += f", m_sharpness={self.m_sharpness}"
        return f"SAM(rho={self.rho}, rule={self.rule!r}{extra})"

    # -- the perturbation --------------------------------------------------------------------------
    def _norm(self, norm_value: float, what: str) -> None:
        if norm_value == 0.0 and self.norm_eps == 0.0:
            raise ZeroGradientError(
                f"the {self.rule.upper()} perturbation ρ·{what} is undefined: the gradient is exactly "
                f"zero. Use rho=0, rule='usam', norm_eps > 0, or start from a point with a non-zero "
                f"gradient."
            )

    def _check_mask(self, d: int) -> None:
        if self.t_mask is not None and self.t_mask.shape != (d,):
            raise InvalidInputError(f"`t_mask` has {self.t_mask.size} entries, the parameters have {d}")

    def perturbation(self, theta: Any, g: Any) -> Any:
        """ε(θ; g), shape (d,). autograd-differentiable in θ and g (away from ‖g‖ = 0).

        Given blocks θ, g of shape (d, K) — K runs advanced together (the ground truth's block
        replays) — it returns the K perturbations as columns (NumPy only, not differentiable).
        """
        if np.ndim(g) == 2:
            return self._perturbation_columns(np.asarray(theta), np.asarray(g))
        if self.rho == 0.0:
            return 0.0 * g
        if self.rule == "usam":
            return self.rho * g
        # Under autograd (the autodiff oracle) always the max-scaled form: its reverse pass carries
        # cotangents ~ 1/‖s‖² that underflow for ‖s‖ ~ 1e110 although s·s itself is safe (found by the
        # fuzz suite: 0.1% to 2% errors in the oracle at weight scales beyond 2^500).
        traced = _is_traced(g) or _is_traced(theta)
        if self.rule == "sam":
            if _in_safe_range(g) and not traced:  # the common case: sqrt(g·g) is accurate
                return self.rho * g / (anp.sqrt(anp.dot(g, g)) + self.norm_eps)
            return self._rescaled(g, anp.ones(len(g)), "g/‖g‖")
        t = anp.abs(theta) + self.kappa  # diagonal of T
        if self.t_mask is not None:
            self._check_mask(len(g))
            t = anp.where(self.t_mask, t, 1.0)
        s = t * g
        if _in_safe_range(s) and not traced:
            return self.rho * t**2 * g / (anp.sqrt(anp.sum(s**2)) + self.norm_eps)  # ‖T g‖
        return self._rescaled(s, t, "T²g/‖Tg‖")

    def _perturbation_columns(self, theta: Array, g: Array) -> Array:
        """ε of every column of g (d, K): the formula of `perturbation()` with norms along axis 0,
        max-scaled per column where s·s would leave the safe range, ρ T s / e for a zero column."""
        if self.rho == 0.0:
            return np.zeros_like(g)
        if self.rule == "usam":
            return self.rho * g
        if self.rule == "sam":
            t: Any = 1.0
            what = "g/‖g‖"
        else:
            t = np.abs(theta) + self.kappa
            if self.t_mask is not None:
                self._check_mask(g.shape[0])
                t = np.where(self.t_mask[:, None], t, 1.0)
            what = "T²g/‖Tg‖"
        s = t * g
        scale = np.max(np.abs(s), axis=0)  # (K,)
        self._norm(float(scale.min()), what)  # a zero column needs e > 0
        safe = (scale > _SAFE_LOW) & (scale < _SAFE_HIGH)
        divisor = np.where(safe | (scale == 0.0), 1.0, scale)  # max-scaling for the unsafe columns only
        unit = s / divisor
        norm = np.sqrt(np.einsum("ij,ij->j", unit, unit))
        denominator = norm + self.norm_eps / divisor  # = (‖s‖ + e)/divisor
        denominator = np.where(scale == 0.0, self.norm_eps, denominator)  # s = 0: ρ T s / e = 0
        return np.asarray(self.rho * t * unit / denominator, dtype=np.float64)

    def _rescaled(self, s: Any, t: Any, what: str) -> Any:
        """ρ T s/(‖s‖ + e) from s/max|s|, for an s whose s·s would overflow or underflow (ε is invariant
        to the scale of s, so nothing is lost); raises for s = 0 unless e > 0."""
        scale = _value(anp.max(anp.abs(s)))
        self._norm(scale, what)
        if scale == 0.0:  # s = 0 with e > 0: ε = ρ T s / e, written so that autograd sees ∂ε/∂g = ρT²/e
            return self.rho * t * s / self.norm_eps
        unit = s / scale  # max |unit| = 1: its norm lies in [1, sqrt(d)]
        return self.rho * t * unit / (anp.sqrt(anp.dot(unit, unit)) + self.norm_eps / scale)

    # -- Jacobians ---------------------------------------------------------------------------------
    def jacobian_g(self, theta: Array, g: Array) -> Array:
        """∂ε/∂g, shape (d, d). Symmetric for every rule."""
        d = g.shape[0]
        if self.rho == 0.0:
            return np.zeros((d, d))
        if self.rule == "usam":
            return self.rho * np.eye(d)
        scale, t, u, coef = self._g_factors(theta, g)
        return scale * t[:, None] * (np.eye(d) - coef * np.outer(u, u)) * t[None, :]

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
        scale, t, u, coef = self._g_factors(theta, g)
        t, u_col = _column(t, v), _column(u, v)
        tv = t * v
        return scale * t * (tv - coef * u_col * (u @ tv))

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

    def _g_factors(self, theta: Array, g: Array) -> tuple[float, Array, Array, float]:
        """(ρ/q, t, u, n/q) with ∂ε/∂g = (ρ/q) T (I − (n/q) u uᵀ) T, s = T g, n = ‖s‖, q = n + e,
        u = s/n (T = I for SAM; u = 0 when n = 0, which needs e > 0)."""
        t = self._t(theta, g.shape[0])
        s = t * g
        norm = _norm_2(s)
        self._norm(norm, "g/‖g‖")
        q = norm + self.norm_eps
        if norm == 0.0:
            return float(self.rho / q), t, np.zeros_like(s), 0.0
        return float(self.rho / q), t, s / norm, norm / q

    def _theta_factors(self, theta: Array, g: Array) -> tuple[Array, Array, Array]:
        """ASAM's (a, b, c) with ∂ε/∂θ|_g = diag(a) − b cᵀ (module docstring):
        a = 2ρ t g σ/q,  b = ρ t² g/(q² n),  c = t g² σ   (σ = sgn θ on the masked coordinates, else 0)."""
        t = self._t(theta, g.shape[0])
        sgn = np.sign(theta) if self.t_mask is None else np.where(self.t_mask, np.sign(theta), 0.0)
        norm = _norm_2(t * g)
        self._norm(norm, "T²g/‖Tg‖")
        q = norm + self.norm_eps
        if norm == 0.0:
            return 2.0 * self.rho * t * g * sgn / q, np.zeros_like(g), t * g**2 * sgn
        if 1e-90 < norm < 1e90:  # q² n and g³ stay in range: the direct form
            return 2.0 * self.rho * t * g * sgn / q, self.rho * t**2 * g / (q * q * norm), t * g**2 * sgn
        # b cᵀ = [ρ t (tg/q)] [σ g (tg/n)/q]ᵀ: every factor bounded, whatever the scale of g
        u = t * g / norm
        return 2.0 * self.rho * t * g * sgn / q, self.rho * t * (t * g / q), sgn * g * u / q

    def d_rho(self, theta: Array, g: Array) -> Array:
        """∂ε/∂ρ = ε/ρ (every rule is linear in ρ), shape (d,)."""
        unit_rho = SAM(1.0, self.rule, self.kappa, self.norm_eps, self.t_mask)
        return np.asarray(unit_rho.perturbation(theta, g), dtype=np.float64)

    def _t(self, theta: Array, d: int) -> Array:
        """Diagonal of T: |θ| + κ for ASAM (1 off the mask), ones for SAM (so SAM is ASAM with T = I)."""
        if self.rule == "asam":
            self._check_mask(d)
            t = np.abs(theta) + self.kappa
            return t if self.t_mask is None else np.where(self.t_mask, t, 1.0)
        return np.ones(d)


# max|x| inside (_SAFE_LOW, _SAFE_HIGH): x·x neither overflows nor underflows (for any d < 1e28), so
# sqrt(x·x) is accurate; outside it the norm is taken of x/max|x|.
_SAFE_LOW, _SAFE_HIGH = 1e-140, 1e140


def check_sam(sam: object) -> SAM:
    """The one check that ``sam`` is a refsam.SAM (every public entry point calls it)."""
    if not isinstance(sam, SAM):
        raise InvalidInputError(f"`sam` must be a refsam.SAM, got {type(sam).__name__}")
    return sam


def _is_traced(x: Any) -> bool:
    """True for an autograd box (a value being differentiated)."""
    return hasattr(x, "_value")


def _in_safe_range(x: Any) -> bool:
    """True if 0 < _SAFE_LOW < max|x| < _SAFE_HIGH (x may be an autograd box)."""
    while hasattr(x, "_value"):
        x = x._value
    if not x.size:
        return False
    peak = max(float(x.max()), -float(x.min()))
    return _SAFE_LOW < peak < _SAFE_HIGH


def _norm_2(x: Array) -> float:
    """‖x‖₂ without overflow or underflow: sqrt(x·x) when that is safe, else max|x| · ‖x/max|x|‖."""
    if _in_safe_range(x):
        return float(np.sqrt(x @ x))
    scale = float(np.max(np.abs(x)))
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    unit = x / scale
    return scale * float(np.sqrt(unit @ unit))


def _column(a: Array, v: Array) -> Array:
    """``a`` (d,) shaped to multiply ``v``: itself for a vector, a (d, 1) column for a block (d, k)."""
    return a if v.ndim == 1 else a[:, None]


def _value(x: Any) -> float:
    """The float inside an autograd box (or x itself)."""
    while hasattr(x, "_value"):
        x = x._value
    return float(x)
