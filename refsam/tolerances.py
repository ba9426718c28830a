"""Named tolerances of the ladder of oracles, each with the reason for its value, and the comparison rule.

Every comparison in refsam (its self-checks, its reference cases, its tests) uses

    rel_err(a, b) = ‖a − b‖_∞ / max(‖b‖_∞, 1e-300)        (b is the reference)

against one of the constants below. Each constant has one name and one value everywhere; tests import
them from here (``tests/test_tolerance_table.py`` checks that no other module redefines a name).

The ladder, from the most to the least exact comparison:

====================  ========  =========================================================================
name                  value     why this value
====================  ========  =========================================================================
RTOL_DERIVATIVE       1e-10     a hand-written derivative vs autograd: the same float64 sums, reordered
RTOL_JACOBIAN         1e-9      hand-derived Jacobians (∂ε/∂g, ∂G/∂θ) vs autograd: products of d × d terms
RTOL_EXACT_METHODS    1e-9      adjoint = forward = autodiff through a run: T steps of reordered products
RTOL_USER_MODEL       1e-12     a user model written in autograd.numpy vs the built-in hand derivatives
                                of the same loss: round-off only, the same loss and the same recursion
RTOL_TRAJECTORY_FD    1e-5      exact trajectory influence vs central differences of replays, h = FD_STEP:
                                truncation O(h²) ≈ 1e-8 relative, times the conditioning of a T-step run
RTOL_CLOSED_FORM_FD   1e-6      closed form vs central differences of re-solved roots, h = FD_STEP
RTOL_CASE_EXACT       1e-7      an external float64 port vs a stored exact output of a reference case:
                                ports reorder sums and use other solvers (~1e-12); any dropped SAM term
                                moves the scores by more than 1e-3
RTOL_CHAIN_RULE       1e-9      scores = (dθ_T/dw) ∇f(θ_T): one exact derivative contracted two ways
====================  ========  =========================================================================

Other named numbers:

* ``FD_STEP = 1e-4``: the central-difference step h in w_j = w⁰_j ± h, for replays and re-solved roots:
  truncation ~h² ≈ 1e-8 relative, rounding ~1e-16/h ≈ 1e-12.
* ``ROOT_TOL = 1e-10``: ‖G(θ̂)‖₂ at which the root solver calls θ̂ a verified root; float64 roots polish
  to ~1e-16.
* ``ROOT_TOL_INFLUENCE = 1e-8``: the closed form's default acceptance of a given θ̂ as a root: its error
  grows in proportion to ‖G(θ̂)‖.
* ``RESOLVE_TOL = 1e-12``: the residual every re-solved root of the ground truth must reach.
* ``COND_WARN = 1e12``: cond(∂G/∂θ) above this loses at least 12 of float64's 16 digits in a solve.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "COND_WARN",
    "FD_STEP",
    "RESOLVE_TOL",
    "ROOT_TOL",
    "ROOT_TOL_INFLUENCE",
    "RTOL_CASE_EXACT",
    "RTOL_CHAIN_RULE",
    "RTOL_CLOSED_FORM_FD",
    "RTOL_DERIVATIVE",
    "RTOL_EXACT_METHODS",
    "RTOL_JACOBIAN",
    "RTOL_TRAJECTORY_FD",
    "RTOL_USER_MODEL",
    "rel_err",
]

RTOL_DERIVATIVE = 1e-10
RTOL_JACOBIAN = 1e-9
RTOL_EXACT_METHODS = 1e-9
RTOL_USER_MODEL = 1e-12
RTOL_TRAJECTORY_FD = 1e-5
RTOL_CLOSED_FORM_FD = 1e-6
RTOL_CASE_EXACT = 1e-7
RTOL_CHAIN_RULE = 1e-9

FD_STEP = 1e-4
ROOT_TOL = 1e-10
ROOT_TOL_INFLUENCE = 1e-8
RESOLVE_TOL = 1e-12
COND_WARN = 1e12


def rel_err(a: ArrayLike, b: ArrayLike) -> float:
    """‖a − b‖_∞ / max(‖b‖_∞, 1e-300); ``b`` is the reference. Empty arrays compare equal (0.0)."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a_arr - b_arr), initial=0.0)
                 / max(float(np.max(np.abs(b_arr), initial=0.0)), 1e-300))
