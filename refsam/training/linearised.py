"""The SAM step linearised: one object for every derivative of it.

Every exact method of refsam differentiates the same step (`refsam.training.step`, which training and
replays run, handing g̃ to the optimizer's `update()`). This module is the one home of its Jacobians:
the adjoint calls `SAMStep.vjp()`, the forward and hyper-parameter recursions `SAMStep.jvp()`, and the
closed form and its matrix-free operators the same perturbation's `LinearisedPerturbation.tangent()`,
`cotangent()` and `jacobian()` at a root.

Conventions
-----------
* One perturbation C (the batch, or an m-sharpness chunk) at θ, with c_j = w_j/|C| for j ∈ C,
  F_C = Σ_j c_j ℓ_j, the curvature C(x) (the Hessian ∇²F_C(x), or an approximation of it supplied by
  the caller) and K(x) = C(x) + λ_in I (λ_in = ``problem.l2``); the step's rule (`SAM.at_step`) perturbs
  along u (u = g, or Friendly SAM's u = g − σm with m its running mean) and forms g̃_C = φ(g, g^p)
  (`SAM.descent`; φ = g^p for the "sam" direction):

      P = ∂ε/∂u (symmetric but for Fisher SAM),   S = ∂ε/∂θ|_u (ASAM's T term; 0 for the other rules)
      A_g = ∂φ/∂g,  A_p = ∂φ/∂g^p                 (A_g = 0, A_p = I for the "sam" direction)
      M_C = ∂g̃_C/∂θ = A_p K(ŵ_C) (I + P K(θ) + S) + A_g K(θ)                     (d, d), not symmetric
      ∂g̃_C/∂c_j = A_p [∇ℓ_j(ŵ_C) + K(ŵ_C) P ∇ℓ_j(θ)] + A_g ∇ℓ_j(θ)                (c_j = w_j/|C|)

  The step's descent gradient is g̃ = Σ_C (|C|/|B|) g̃_C, so ∂g̃/∂w_j = (1/|B|) ∂g̃_C/∂c_j for j ∈ C.
  Friendly SAM adds its state: ∂u/∂m = −σ I, and m' = λ_f m + (1 − λ_f) g (m' = g on its first step).
* Tangents (forward mode), a block Θ̇ (d, k) and the state's ṁ:
      ġ = K(θ) Θ̇,   u̇ = ġ − σ ṁ,   ŵ̇ = Θ̇ + P u̇ + S Θ̇,   ġ^p = K(ŵ) ŵ̇,   ġ̃_C = A_g ġ + A_p ġ^p,
      ṁ' = λ_f ṁ + (1 − λ_f) ġ
  Cotangents (reverse mode), a block D (d, k) of adjoints of g̃_C and m̄' of m':
      D_p = A_pᵀ D,  Q = K(ŵ) D_p,  ū = Pᵀ Q,  Z = ū + A_gᵀ D + (1 − λ_f) m̄'   (the adjoint of g)
      M_Cᵀ D = Q + Sᵀ Q + K(θ) Z,   m̄ = −σ ū + λ_f m̄',
      row j: (∂g̃_C/∂c_j)ᵀ D = ∇ℓ_j(ŵ)ᵀ D_p + ∇ℓ_j(θ)ᵀ Z
  (K is symmetric.) Then the optimizer's own JVP/VJP (`refsam.training.optimizers`) carries them
  through its update.
* Cost per perturbation: two curvature products (HVPs for the exact curvature) per column each way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cached_property
from typing import Protocol

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from ..models import BatchDerivatives
from ..objective import Problem, decay_matrix, decay_times
from ..sam import SAM
from ..tolerances import CANCEL_WARN
from .clipping import GradientClipping
from .optimizers import Optimizer, State
from .step import Perturbation, batch_descent, chunk_descent, perturbations

__all__ = ["CurvatureProtocol", "ExactCurvature", "LinearisedPerturbation", "SAMStep", "scatter_add"]

Array = NDArray[np.float64]
Hook = Callable[["LinearisedPerturbation", Array], None]


class CurvatureProtocol(Protocol):
    """C(x) at one point: products, products with the per-sample gradient rows, the dense matrix."""

    derivatives: BatchDerivatives

    def times(self, V: Array) -> Array: ...  # C(x) V, (d, k)

    def times_and_rows(self, V: Array) -> tuple[Array, Array]: ...  # (C(x) V, ∇ℓ_j(x)ᵀ V rows (|C|, k))

    def matrix(self) -> Array: ...  # C(x), (d, d)


class ExactCurvature:
    """C(x) = H(x), the exact Hessian: products by the model's Hessian-vector products, which share
    their forward pass with the per-sample rows (``hvp_and_jvp``)."""

    def __init__(self, derivatives: BatchDerivatives, hessian: Array | None = None) -> None:
        self.derivatives = derivatives
        self._matrix = hessian

    def times(self, V: Array) -> Array:
        return self.derivatives.hvp(V) if self._matrix is None else self._matrix @ V

    def times_and_rows(self, V: Array) -> tuple[Array, Array]:
        if self._matrix is None:
            return self.derivatives.hvp_and_jvp(V)
        return self._matrix @ V, self.derivatives.jvp(V)

    def matrix(self) -> Array:
        if self._matrix is None:
            self._matrix = self.derivatives.hessian()
        return self._matrix


class LinearisedPerturbation:
    """One perturbation C of a step with its derivatives (module docstring)."""

    def __init__(self, sam: SAM, lam_in: float | Array, theta: Array, part: Perturbation,
                 at_theta: CurvatureProtocol, at_w_hat: CurvatureProtocol) -> None:
        self.sam, self.lam_in, self.theta, self.part = sam, lam_in, theta, part  # θ: (d,)
        self.at_theta, self.at_w_hat = at_theta, at_w_hat
        self.idx, self.share = part.idx, part.share
        self.g, self.w_hat, self.g_p = part.g, part.w_hat, part.g_p
        self.u = part.g if part.u is None else part.u  # the rule's input

    # -- the pieces -----------------------------------------------------------------------------------
    def K_theta(self, V: Array) -> Array:
        """K(θ) V = C(θ) V + λ_in V."""
        return self.at_theta.times(V) + decay_times(self.lam_in, V)

    def K_hat(self, V: Array) -> Array:
        """K(ŵ) V = C(ŵ) V + λ_in V."""
        return self.at_w_hat.times(V) + decay_times(self.lam_in, V)

    def P(self, V: Array) -> Array:
        """P V = (∂ε/∂u) V, O(d) per column."""
        return self.sam.jvp_g(self.theta, self.u, V)

    def P_T(self, V: Array) -> Array:
        """Pᵀ V (P V itself but for Fisher SAM)."""
        return self.sam.vjp_g(self.theta, self.u, V)

    def S(self, V: Array) -> Array:
        """S V = (∂ε/∂θ|_u) V."""
        return self.sam.jvp_theta(self.theta, self.u, V)

    def S_T(self, V: Array) -> Array:
        """Sᵀ V."""
        return self.sam.vjp_theta(self.theta, self.u, V)

    def direction(self, dg: Array, dg_p: Array) -> Array:
        """ġ̃_C = A_g ġ + A_p ġ^p."""
        assert self.sam.direction == "sam" or self.g_p is not None  # perturbations() computed g^p
        return self.sam.descent_jvp(self.g, self.g_p if self.g_p is not None else self.g, dg, dg_p)

    # -- products -------------------------------------------------------------------------------------
    def tangent(self, dtheta: Array, add_g: Hook | None = None, add_w_hat: Hook | None = None,
                add_descent: Hook | None = None) -> Array:
        """ġ̃_C = M_C Θ̇ for a block Θ̇ (d, k), unscaled by the share (a stateless rule; `tangents()`)."""
        return self.tangents(dtheta, None, add_g, add_w_hat, add_descent)[0]

    def tangents(self, dtheta: Array, dm: Array | None, add_g: Hook | None = None,
                 add_w_hat: Hook | None = None,
                 add_descent: Hook | None = None) -> tuple[Array, Array | None]:
        """(ġ̃_C, ṁ') for a block Θ̇ (d, k) and the rule state's tangent ṁ (None for a stateless rule).

        The hooks add a parameter's own terms in place (a tangent recursion's sources): ``add_g`` into
        ġ, ``add_w_hat`` into ŵ̇, ``add_descent`` into ġ^p (the gradient at ŵ)."""
        dg = self.K_theta(dtheta)  # ġ = K(θ) Θ̇
        if add_g is not None:
            add_g(self, dg)
        du = self.sam.perturbation_input(dg, dm)  # u̇ = ġ − σ ṁ (linear: the rule's own map)
        dw_hat = dtheta + self.P(du) + self.S(dtheta)  # ŵ̇ = Θ̇ + P u̇ + S Θ̇
        if add_w_hat is not None:
            add_w_hat(self, dw_hat)
        dg_p = self.K_hat(dw_hat)  # ġ^p = K(ŵ) ŵ̇
        if add_descent is not None:
            add_descent(self, dg_p)
        return self.direction(dg, dg_p), self.sam.next_rule_state(dg, dm)  # ṁ' (linear too)

    def cotangent(self, D: Array, jacobian: bool = True) -> tuple[Array | None, Array]:
        """(M_Cᵀ D, rows) for a block D (d, k) of adjoints of g̃_C, unscaled by the share (a stateless
        rule; `cotangents()`): rows (|C|, k) are the adjoints of the c_j (so G_w V = rows/n for the full
        batch). ``jacobian=False``: the rows only (None for M_Cᵀ D), one curvature product per column
        instead of two."""
        MtD, rows, _ = self.cotangents(D, None, jacobian)
        return MtD, rows

    def cotangents(self, D: Array, ct_m: Array | None,
                   jacobian: bool = True) -> tuple[Array | None, Array, Array | None]:
        """(M_Cᵀ D, rows, m̄) from D (d, k), the adjoint of g̃_C, and m̄', the adjoint of the rule's next
        state (None for a stateless rule) (module docstring)."""
        D_g, D_p = self.sam.descent_vjp(self.g, self.g_p if self.g_p is not None else self.g, D)
        HD, rows_hat = self.at_w_hat.times_and_rows(D_p)
        Q = HD + decay_times(self.lam_in, D_p)  # K(ŵ) D_p, the adjoint of ŵ
        U = self.P_T(Q)  # ū
        Z = U if D_g is None else U + D_g  # the adjoint of g: through u and the direction ...
        from_state, ct_m_before = self.sam.rule_state_vjp(U, ct_m)
        if from_state is not None:
            Z = Z + from_state  # ... and through the rule's next state
        if not jacobian:
            return None, rows_hat + self.at_theta.derivatives.jvp(Z), ct_m_before
        HZ, rows_theta = self.at_theta.times_and_rows(Z)
        return Q + HZ + decay_times(self.lam_in, Z) + self.S_T(Q), rows_hat + rows_theta, ct_m_before

    def weight_tangent(self, U: Array) -> Array:
        """Σ_j (∂g̃_C/∂c_j) U_j for a block U (|C|, k) of tangents of the c_j, (d, k):
        A_p [Σ_j ∇ℓ_j(ŵ) U_j + K(ŵ) P Σ_j ∇ℓ_j(θ) U_j] + A_g Σ_j ∇ℓ_j(θ) U_j."""
        inner = _weighted_grads(self.at_theta.derivatives, U)  # Σ_j ∇ℓ_j(θ) U_j, (d, k)
        at_w_hat = _weighted_grads(self.at_w_hat.derivatives, U)  # Σ_j ∇ℓ_j(ŵ) U_j
        return self.direction(inner, at_w_hat + self.K_hat(self.P(inner)))

    # -- dense, for a direct solve at a root -------------------------------------------------------------
    def jacobian(self) -> Array:
        """M_C = A_p K(ŵ)(I + E) + A_g K(θ), E = P K(θ) + S, dense (d, d): the closed form's J without
        λ_out. Cost: the two curvature matrices and one d × d product (E from P's structure in O(d²) per
        column block)."""
        d = self.theta.shape[0]
        K_theta = self.at_theta.matrix() + decay_matrix(self.lam_in, d)
        K_hat = self.at_w_hat.matrix() + decay_matrix(self.lam_in, d)
        E = self.P(K_theta) + self.sam.jacobian_theta(self.theta, self.u)  # dε/dθ = P K(θ) + S
        return self.direction(K_theta, K_hat + K_hat @ E)

    def weight_rows(self) -> Array:
        """Rows ∂g̃_C/∂c_j = A_p [∇ℓ_j(ŵ) + K(ŵ) P ∇ℓ_j(θ)] + A_g ∇ℓ_j(θ), dense (|C|, d)."""
        grads_hat = self.at_w_hat.derivatives.per_sample_grads()  # ∇ℓ_j(ŵ), (|C|, d)
        grads_theta = self.at_theta.derivatives.per_sample_grads()  # ∇ℓ_j(θ), (|C|, d)
        d = self.theta.shape[0]
        if self.sam.direction == "sam" and self.sam.rule != "fisher":  # P symmetric: (K(ŵ) P)ᵀ = P K(ŵ)
            M_T = self.P(self.at_w_hat.matrix() + decay_matrix(self.lam_in, d))
            return grads_hat + grads_theta @ M_T
        K_hat = self.at_w_hat.matrix() + decay_matrix(self.lam_in, d)
        columns = self.direction(grads_theta.T, grads_hat.T + K_hat @ self.P(grads_theta.T))
        return np.ascontiguousarray(columns.T)

    def warn_if_cancelled(self, stacklevel: int = 6) -> None:
        """The exact methods differentiate ε = ρ Tu/(‖Tu‖ + e): warn when the rule's input M u_C (u = g, or
        Friendly SAM's g − σm; M a perturb_mask) is round-off-level cancellation of its terms
        (tolerances.CANCEL_WARN): ε's direction is then set by rounding, which the exact derivatives
        amplify by ‖terms‖/(‖Mu‖ + e). The size of the terms is Σ_j |c_j| ‖∇ℓ_j‖ + ‖λ_in θ‖ (+ σ‖m‖) (T
        scales coordinates after the sum, so the ratio is judged on u); the unit-gradient mix's g/‖g‖ is
        judged the same way. A denominator e
        protects only if it is large against that rounding: the public codes' 1e-12 or 1e-16 does not
        (found by the fuzz suite: 16% disagreement at ‖g‖ ≈ e = 1e-16). Cost: O(|C| d) for the built-in
        models; a user model first bounds the terms by a few evaluations of its losses and pays its d or n
        backward passes only where that bound cannot rule the warning out
        (`BatchDerivatives.weighted_grad_norm_sum`)."""
        # what the step divides by its norm: the rule's input, and g in the unit-gradient mix
        normalises = [] if self.sam.rule == "usam" else [self.sam.masked(self.u)]
        if self.sam.unit_gradient:
            normalises.append(self.g)  # the gradient-norm penalty's g/‖g‖
        if self.sam.rho == 0.0 or not normalises:
            return
        # the rule normalises M u (u = g − σm for Friendly SAM, M a perturb_mask): σm joins the terms
        decay = (float(scipy.linalg.norm(decay_times(self.lam_in, self.theta)))
                 + (float(scipy.linalg.norm(self.u - self.g)) if self.u is not self.g else 0.0))
        top = min(float(scipy.linalg.norm(v)) for v in normalises) + self.sam.norm_eps  # nrm2: no overflow
        # terms below top/CANCEL_WARN − ‖λθ‖ cannot warn: the model may answer with a cheap bound there
        size = self.at_theta.derivatives.weighted_grad_norm_sum(below=top / CANCEL_WARN - decay) + decay
        if self.sam.unit_gradient:
            # g/‖g‖ is O(1) whatever the weights, so ∂/∂w_j = (I − uuᵀ)∇ℓ_j/(|C| ‖g‖) carries the rounding
            # of ∇ℓ_j undamped: judged against the unweighted Σ_j ‖∇ℓ_j‖/|C| (a batch of tiny weights: found
            # by the fuzz suite, adjoint and autodiff 30% apart at w_j = 1.8e-86)
            norms = self.at_theta.derivatives.per_sample_grad_norms()
            size = max(size, float(np.sum(norms)) / len(norms) + decay)
        if not 0.0 < size < np.inf:
            return
        ratio = top / size
        if ratio < CANCEL_WARN:
            warnings.warn(f"a step's perturbation gradient is {ratio:.1e} of the size of the per-sample "
                          f"terms it sums (cancellation): ε's direction is set by rounding there, and the "
                          f"exact methods can disagree with each other and with autodiff. Use rule='usam', "
                          f"norm_eps well above {CANCEL_WARN:g} x the per-sample gradients, or avoid steps "
                          f"where the batch gradient nearly vanishes.", RuntimeWarning, stacklevel=stacklevel)


def _weighted_grads(derivatives: BatchDerivatives, U: Array) -> Array:
    """Σ_j ∇ℓ_j(x) U_j at the derivatives' point x, one weighted gradient per column of U (|C|, k)."""
    model, x, X, y = derivatives.model, derivatives.theta, derivatives.X, derivatives.y
    return np.stack([model.derivatives(x, X, y, u).grad() for u in U.T], axis=1)


def linearise_perturbations(problem: Problem, sam: SAM, theta: Array, parts: list[Perturbation],
                            curvature: Callable[[BatchDerivatives], CurvatureProtocol] = ExactCurvature,
                            ) -> list[LinearisedPerturbation]:
    """Each perturbation with its curvature at θ and at ŵ_C (``curvature`` builds it from the batch
    derivatives there; default the exact Hessian)."""
    out = []
    for part in parts:
        assert part.at_theta is not None and part.at_w_hat is not None  # a single run, not a block
        out.append(LinearisedPerturbation(sam, problem.l2, theta, part, curvature(part.at_theta),
                                          curvature(part.at_w_hat)))
    return out


class SAMStep:
    """Step t of a run: the SAM descent gradient of ``optimizer`` on batch B_t at (θ_t, s_t), with its
    update, JVP and VJP (module docstring). ``sam`` is the run's rule; the step uses its rule of step t
    (`SAM.at_step`), whose own state before the step is ``rule_state`` (Friendly SAM's running mean; None
    for a stateless rule). The JVP and VJP carry the state tuples of the optimizer's ``state_names``
    followed by the rule's.

    ``g`` and ``w_hat``: the step's perturbation gradient and perturbed point where the run recorded
    them (a single perturbation); otherwise they are recomputed, exactly as training computed them.
    """

    def __init__(self, problem: Problem, sam: SAM, optimizer: Optimizer, t: int, lr: float, theta: Array,
                 state: State, idx: NDArray[np.int64], g: Array | None = None,
                 w_hat: Array | None = None, clipping: GradientClipping | None = None,
                 rule_state: Array | None = None) -> None:
        sam = sam.at_step(t)
        self.problem, self.sam, self.optimizer, self.clipping = problem, sam, optimizer, clipping
        self.t, self.lr, self.theta, self.state, self.idx = t, lr, theta, state, idx
        self.inv_batch = 1.0 / len(idx)  # ∂(w_j/|B|)/∂w_j
        self.n_optimizer_states = len(optimizer.state_names)
        # g̃_t is a batch gradient at ŵ_t: computed only where the step's derivatives read it (Adam's, a
        # clip's), never for a recorded SGD step, whose Jacobians do not depend on it
        self.needs_descent = clipping is not None or optimizer.derivatives_read_gradient
        parts = perturbations(problem, sam, theta, idx, None, g, w_hat, descent=self.needs_descent,
                              rule_state=rule_state)
        self.parts = linearise_perturbations(problem, sam, theta, parts)

    @cached_property
    def raw_descent(self) -> Array:
        """g̃_t = Σ_C (|C|/|B|) g̃_C (one perturbation: g̃_C itself)."""
        descents = [p.part.descent if p.part.descent is not None
                    else chunk_descent(self.problem, p.at_w_hat.derivatives.grad(), p.w_hat)
                    for p in self.parts]  # (g̃_C = g^p_C where it was not computed: the "sam" direction)
        return batch_descent([p.share for p in self.parts], descents)

    @cached_property
    def descent(self) -> Array:
        """What the optimizer receives: g̃_t, or s g̃_t under clipping (refsam.training.clipping)."""
        return self.raw_descent if self.clipping is None else self.clipping.apply(self.raw_descent)

    def _gradient_for_derivatives(self) -> Array | None:
        return self.descent if self.needs_descent else None

    def warn_if_cancelled(self) -> None:
        """Warn where the derivatives are ill-defined: g cancelled to round-off, a clip on its kink, or an
        optimizer's own singularity (Adam's √v̂ near 0)."""
        for part in self.parts:
            part.warn_if_cancelled(stacklevel=7)
        if self.clipping is not None:
            self.clipping.warn_if_on_kink(self.raw_descent, self.t)
        if self.optimizer.derivatives_read_gradient:
            self.optimizer.warn_if_singular(self.t, self.theta, self.state, self.descent)

    def _split(self, states: State) -> tuple[State, Array | None]:
        """(the optimizer's part, the rule's state or None) of a state tuple."""
        k = self.n_optimizer_states
        return tuple(states[:k]), (states[k] if len(states) > k else None)

    def jvp(self, dtheta: Array, dstate: State, add_g: Hook | None = None, add_w_hat: Hook | None = None,
            add_descent: Hook | None = None, dlam: Array | None = None,
            add_step_descent: Callable[[Array], None] | None = None,
            dlr: Array | None = None) -> tuple[Array, State]:
        """(Θ̇_{t+1}, ṡ_{t+1}) from (Θ̇_t, ṡ_t), blocks (d, k): ġ̃ = Σ_C share·M_C Θ̇ (plus the hooks'
        sources; ``add_step_descent`` adds to ġ̃ itself), then the optimizer's JVP (``dlam``: the
        tangent of its weight decay per column, or None), plus (∂θ'/∂η) η̇ for ``dlr``, the tangent of
        this step's learning rate per column (k,) (None: 0). ṡ ends with the rule state's tangent."""
        dopt, dm = self._split(dstate)
        ddescent = np.zeros_like(dtheta)
        dm_next = None
        for part in self.parts:
            tangent, dm_next = part.tangents(dtheta, dm, add_g, add_w_hat, add_descent)
            ddescent = ddescent + (tangent if part.share == 1.0 else part.share * tangent)
        if add_step_descent is not None:
            add_step_descent(ddescent)
        if self.clipping is not None:
            ddescent = self.clipping.jvp(self.raw_descent, ddescent)
        new_dtheta, new_dstate = self.optimizer.jvp(self.t, self.lr, self.theta, self.state,
                                                    self._gradient_for_derivatives(), dtheta, dopt,
                                                    ddescent, dlam)
        if dlr is not None:
            lr_derivative = self.optimizer.lr_derivative(self.t, self.theta, self.state, self.descent)
            new_dtheta = new_dtheta + lr_derivative[:, None] * dlr[None, :]
        return new_dtheta, new_dstate if dm_next is None else (*new_dstate, dm_next)

    def vjp(self, ct_theta: Array, ct_state: State, influence: Array) -> tuple[Array, State]:
        """(θ̄_t, s̄_t) from (θ̄_{t+1}, s̄_{t+1}), blocks (d, k); adds each j ∈ B_t's (∂θ_{t+1}/∂w_j)ᵀ θ̄_{t+1}
        to ``influence`` (n, k) in place. s̄ ends with the rule state's adjoint."""
        ct_opt, ct_m = self._split(ct_state)
        ct_theta, ct_opt, D = self.optimizer.vjp(self.t, self.lr, self.theta, self.state,
                                                 self._gradient_for_derivatives(), ct_theta,
                                                 ct_opt)  # D = ḡ̃, the adjoint of g̃_t
        if self.clipping is not None:
            D = self.clipping.vjp(self.raw_descent, D)  # the adjoint of the unclipped g̃_t
        ct_m_before = None
        for part in self.parts:
            MtD, rows, ct_m_before = part.cotangents(D, ct_m)
            assert MtD is not None
            scatter_add(influence, part.idx, self.inv_batch * rows)  # share/|C| = 1/|B|
            ct_theta = ct_theta + (MtD if part.share == 1.0 else part.share * MtD)
        return ct_theta, ct_opt if ct_m_before is None else (*ct_opt, ct_m_before)


def scatter_add(target: Array, rows: NDArray[np.int64], values: Array) -> None:
    """target[rows] += values, row by row; a repeated row (an external batch drawn with replacement)
    receives each of its contributions (np.add.at), distinct rows take one fancy-indexed add."""
    if len(rows) > 1 and np.unique(rows).size < len(rows):
        np.add.at(target, rows, values)
    else:
        target[rows] += values
