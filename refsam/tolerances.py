"""Named tolerances of the ladder of oracles, each with the reason for its value, and the comparison rule.

Every comparison in refsam (its self-checks, its reference cases, its tests) uses

    rel_err(a, b) = ‖a − b‖_∞ / max(‖b‖_∞, 1e-300)        (b is the reference)

against one of the constants below. Each constant has one name and one value everywhere; tests import
them from here (``tests/test_tolerance_table.py`` checks that no other module redefines a name).

The ladder, from the most to the least exact comparison (the rungs of the test suite's folders):

==============================  ========  ================================================================
name                            value     why this value
==============================  ========  ================================================================
RTOL_NORMALISATION              1e-14     ‖ε‖ = ρ after one normalisation: a few ulps
RTOL_REORDERED_RUN              1e-13     a run whose steps each reorder one sum (0.2's m-sharpness adds λθ
                                          after the chunks, 0.1 before): 4.8e-14 after 30 steps
RTOL_REORDERED                  1e-13     one rounding per term reordered (e.g. all weights scaled by c)
RTOL_STEP                       1e-12     hand gradients vs autograd inside one SAM step: a few ulps/term
RTOL_USER_MODEL                 1e-12     a user model in autograd.numpy vs the built-in hand derivatives of
                                          the same loss, through a whole method: round-off only
RTOL_DERIVATIVE                 1e-10     a hand-written derivative vs autograd: the same float64 sums in
                                          another order (rung 1)
RTOL_KOH_LIANG                  1e-10     ρ = 0: the same linear solve written twice
RTOL_RESCALED_RUN               1e-10     one run computed two ways ((1/n)Σ_{i≠j} vs (1/(n−1))Σ, rescaled
                                          η and λ)
RTOL_JACOBIAN                   1e-9      hand-derived Jacobians (∂ε/∂g, ∂G/∂θ) vs autograd: products of
                                          d × d terms (rung 1)
RTOL_EXACT_METHODS              1e-9      adjoint = forward = autodiff through a run: T steps of reordered
                                          products (rung 3)
RTOL_SAME_FORMULA               1e-9      two float64 evaluations of one exact formula through a d × d solve
                                          (e.g. the USAM root = the ERM root)
RTOL_CHAIN_RULE                 1e-9      scores = (dθ_T/dw) ∇f(θ_T): one exact derivative contracted two
                                          ways
RTOL_RUN_REPLAY                 1e-9      a recorded run vs its replay (``Trajectory.verify``): refsam's own
                                          runs replay bit for bit (0); a port's record differs by rounding
                                          grown over T steps; an edited θ_t or ε_t, or another ρ, by far more
RTOL_ITERATIVE_SOLVER           1e-8      an iterative solver of Jᵀv = ∇f run to rtol ≤ 1e-12 vs direct LU:
                                          the residual bound times cond(J) (≤ 1e4 on the test problems)
RTOL_CASE_EXACT                 1e-7      an external float64 port vs a stored exact output of a reference
                                          case: ports reorder sums and use other solvers (~1e-12); a dropped
                                          SAM term moves the scores by more than 1e-3
RTOL_CASE_RECOMPUTE             1e-7      a reference case's stored arrays vs refsam recomputing them from
                                          the suite's recipe (``refsam check``): bit for bit on the machine
                                          that exported them; on another machine, roots solved to 1e-10 and
                                          runs that amplify rounding differ by less than a port is allowed
                                          to (the check grades against the recomputation either way)
RTOL_REFIT                      1e-7      refsam's re-solved root vs an independent autograd Newton refit
RTOL_FD_HVP                     1e-6      H v vs central differences of the gradient, h = 1e-5: truncation
                                          ~1e-10, cancellation ~1e-11
RTOL_CLOSED_FORM_FD             1e-6      closed form vs central differences of re-solved roots, h = FD_STEP
                                          (rung 4)
RTOL_TRAJECTORY_TO_CLOSED_FORM  1e-6      trajectory influence of a run that has reached its root vs the
                                          closed form at that root (rung 4)
RTOL_TRAJECTORY_FD              1e-5      exact trajectory influence vs central differences of replays,
                                          h = FD_STEP: truncation O(h²) ≈ 1e-8 relative, times the
                                          conditioning of a T-step run (rung 4)
RTOL_FD_DERIVATIVE              1e-5      ``check_grads``: derivatives vs central differences of the loss
                                          and of the gradient, h = FD_GRAD_STEP
RTOL_REPLAY_VS_ROOT             5e-3      a 150-step replay ends ~1e-4..1e-3 (relative) short of its root
==============================  ========  ================================================================

Absolute floors:

* ``ATOL_EXACT_METHODS = 1e-13``: drawn runs can have all-zero influence (zero weights).
* ``ATOL_ROOT = 1e-12``: a verified root's residual, measured by an independent oracle (roots ~1e-16).
* ``ATOL_SAME_POINT = 1e-8``: the end of a long converged run vs its root (2000 steps at contraction
  0.98 leave ~1e-17·‖θ‖; 1e-8 is far above that and far below any other root's distance).

Other named numbers:

* ``FD_STEP = 1e-4``: the central-difference step h in w_j = w⁰_j ± h, for replays and re-solved roots:
  truncation ~h² ≈ 1e-8 relative, rounding ~1e-16/h ≈ 1e-12.
* ``FD_STEP_MIN = 1e-10``: the smallest step h the weight finite differences accept: their rounding
  error ~eps·|f|/h is then ≤ ~1e-6 relative for unit-scale losses (h = 1e-300 would return zeros).
* ``FD_STEP_RESOLUTION = 1e-3``: the largest relative difference between h and the step float64 can
  represent at w_j ((w_j + h) − w_j); beyond it h is below the resolution of w_j and is refused.
* ``FD_GRAD_STEP = 1e-6``: the step of ``check_grads``' central differences in θ.
* ``ROOT_TOL = 1e-10``: the one rule for "θ̂ is a verified root": ‖G(θ̂)‖₂ ≤ ROOT_TOL. The root solver,
  the closed form's acceptance of a given θ̂ (its error grows in proportion to ‖G(θ̂)‖), the applications
  and ``FixedPoint.describe()`` all use it; float64 roots polish to ~1e-16.
* ``RUN_AT_ROOT = 1e-6``: the one rule for "the run has reached its root": ‖θ_T − θ̂‖ ≤ RUN_AT_ROOT·(1 +
  ‖θ̂‖); only then does the closed form at θ̂ speak for the run (the demo, the tuner).
* ``RESOLVE_TOL = 1e-12``: the residual every re-solved root of the ground truth must reach.
* ``COND_WARN = 1e12``: cond(∂G/∂θ) above this loses at least 12 of float64's 16 digits in a solve.
* ``ADAM_V_WARN = 1e-8``: an Adam coordinate whose r = √(v̂ + eps_root) is at or below this fraction of the
  largest r: the derivative of m̂/(r + eps) in v̂, −m̂/(2 c₂ r (r + eps)²), amplifies the relative error of
  that coordinate's a_t by ≥ 1e8: the exact methods warn (not at r = 0 exactly, where v's tangent is 0
  too and the derivative is exact).
* ``CANCEL_WARN = 1e-6``: ‖g_t‖ below this fraction of Σ_i |c_i| ‖∇ℓ_i‖ + ‖λθ‖ (the size of the terms
  it is summed from) means g_t is mostly cancellation: ε's direction keeps only ~eps/ratio relative accuracy
  (≥ 2e-10 here), the exact methods' rounding errors are amplified by 1/ratio, and they can disagree by
  more than ``RTOL_EXACT_METHODS``; the trajectory methods warn.
* ``CANCEL_SCREEN_MARGIN = 100``: for a model whose exact per-sample gradient norms are dear (a user
  model: d or n backward passes), the check first bounds Σ_i |c_i| ‖∇ℓ_i‖ by 100 × a 4-probe estimate
  (`refsam.models.grad_norm_sum_screen`) and computes the exact sum only where that bound cannot rule the
  warning out; the estimate falls 100× short with probability ≈ 2e-8.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

RTOL_NORMALISATION = 1e-14
RTOL_REORDERED = 1e-13
RTOL_REORDERED_RUN = 1e-13
RTOL_STEP = 1e-12
RTOL_USER_MODEL = 1e-12
RTOL_DERIVATIVE = 1e-10
RTOL_KOH_LIANG = 1e-10
RTOL_RESCALED_RUN = 1e-10
RTOL_JACOBIAN = 1e-9
RTOL_EXACT_METHODS = 1e-9
RTOL_SAME_FORMULA = 1e-9
RTOL_CHAIN_RULE = 1e-9
RTOL_RUN_REPLAY = 1e-9
RTOL_ITERATIVE_SOLVER = 1e-8
RTOL_CASE_EXACT = 1e-7
RTOL_CASE_RECOMPUTE = 1e-7
RTOL_REFIT = 1e-7
RTOL_FD_HVP = 1e-6
RTOL_CLOSED_FORM_FD = 1e-6
RTOL_TRAJECTORY_TO_CLOSED_FORM = 1e-6
RTOL_TRAJECTORY_FD = 1e-5
RTOL_FD_DERIVATIVE = 1e-5
RTOL_REPLAY_VS_ROOT = 5e-3

ATOL_EXACT_METHODS = 1e-13
ATOL_ROOT = 1e-12
ATOL_SAME_POINT = 1e-8

FD_STEP = 1e-4
FD_STEP_MIN = 1e-10
FD_STEP_RESOLUTION = 1e-3
FD_GRAD_STEP = 1e-6
ROOT_TOL = 1e-10
RUN_AT_ROOT = 1e-6
RESOLVE_TOL = 1e-12
COND_WARN = 1e12
CANCEL_WARN = 1e-6
CANCEL_SCREEN_MARGIN = 100.0
ADAM_V_WARN = 1e-8

__all__ = [name for name in dir() if name.isupper()] + ["rel_err"]


def rel_err(a: ArrayLike, b: ArrayLike) -> float:
    """‖a − b‖_∞ / max(‖b‖_∞, 1e-300); ``b`` is the reference. Empty arrays compare equal (0.0)."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a_arr - b_arr), initial=0.0)
                 / max(float(np.max(np.abs(b_arr), initial=0.0)), 1e-300))


def run_at_root(theta_final: object, theta_hat: object) -> bool:
    """The one rule for "the run has reached its root": ‖θ_T − θ̂‖ ≤ RUN_AT_ROOT·(1 + ‖θ̂‖)."""
    a, b = np.asarray(theta_final, dtype=np.float64), np.asarray(theta_hat, dtype=np.float64)
    return bool(np.linalg.norm(a - b) <= RUN_AT_ROOT * (1.0 + np.linalg.norm(b)))
