"""The finite-difference stencil in one sample weight, shared by every weight-difference ground truth.

For a function F of the weight vector w (a replayed run, a re-solved root) and a training point j,
``weight_stencil(w⁰, j, h)`` returns weight vectors w⁽ᵏ⁾ and coefficients c_k with

    Σ_k c_k F(w⁽ᵏ⁾) = ∂F/∂w_j (w⁰) + O(h²).

* w⁰_j ≥ h: central differences w⁰ ± h e_j, c = ±1/(a − b) with the offsets a, b float64 actually
  represents ((w⁰_j + h) − w⁰_j, (w⁰_j − h) − w⁰_j).
* w⁰_j < h (e.g. a zero or tiny weight: w⁰_j − h would be a negative weight): the second-order
  one-sided stencil on w⁰_j, w⁰_j + h, w⁰_j + 2h (exact for quadratics, with the represented offsets).

``h`` is refused (InvalidInputError) below ``FD_STEP_MIN`` (the rounding error ~eps·|F|/h would swamp
the derivative; h = 1e-300 returns zeros) or below the resolution of w⁰_j (the represented step differs
from h by more than ``FD_STEP_RESOLUTION``, relatively).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ..tolerances import FD_STEP_MIN, FD_STEP_RESOLUTION
from ..validation import check_positive

__all__ = ["check_step", "weight_stencil"]

Array = NDArray[np.float64]


def check_step(h: object) -> float:
    """Validate the finite-difference step ``h``: a float ≥ FD_STEP_MIN."""
    step = check_positive("h", h)
    if step < FD_STEP_MIN:
        raise InvalidInputError(
            f"`h` = {step:g} is too small for finite differences in a weight: their rounding error "
            f"~1e-16·|f|/h would swamp the derivative; use h >= {FD_STEP_MIN:g} (default 1e-4)")
    return step


def _offset(w: float, step: float, j: int, h: float) -> float:
    """(w + step) − w as float64 represents it; refuse a step below the resolution of w."""
    represented = float((np.float64(w) + step) - np.float64(w))
    if abs(represented - step) > FD_STEP_RESOLUTION * abs(step):
        raise InvalidInputError(
            f"`h` = {h:g} is below the resolution of the weight w_{j} = {w:g} in float64 "
            f"(w_{j} + h − w_{j} = {represented:g}); use h >= {np.spacing(abs(w)) / FD_STEP_RESOLUTION:.3g}")
    return represented


def weight_stencil(w0: Array, j: int, h: float) -> tuple[list[Array], Array]:
    """Weight vectors w⁽ᵏ⁾ and coefficients c_k with Σ_k c_k F(w⁽ᵏ⁾) = ∂F/∂w_j + O(h²) (see module)."""
    wj = float(w0[j])
    if wj >= h:
        a, b = _offset(wj, h, j, h), _offset(wj, -h, j, h)
        offsets, coefficients = [a, b], np.array([1.0, -1.0]) / (a - b)
    else:
        a, b = _offset(wj, h, j, h), _offset(wj, 2 * h, j, h)
        # f'(0) from f(0), f(a), f(b): the derivative at 0 of the interpolating quadratic
        offsets = [0.0, a, b]
        coefficients = np.array([-(a + b) / (a * b), b / (a * (b - a)), -a / (b * (b - a))])
    vectors = []
    for offset in offsets:
        w = w0.copy()
        w[j] = wj + offset
        vectors.append(w)
    return vectors, coefficients
