"""Matrix-free products with the closed form's linear system, and the curvatures that may stand in for H.

Conventions
-----------
* Names as in `refsam.influence.linearisation`: at θ (a root θ̂ for the closed form), g = ∇F_w(θ) +
  λ_in θ, ŵ = θ + ε(θ; g), P = ∂ε/∂g (symmetric), S = ∂ε/∂θ|_g, K_C(x) = C(x) + λ_in I, where C(x) is
  the **curvature** at x — the Hessian H(x) = ∇²F_w(x) itself, or an approximation of it:

      "exact"         C = H, products by the models' Hessian-vector products (no d × d matrix)
      "gauss_newton"  C = Σ_i c_i J_iᵀ (∂²ℓ_i/∂z²) J_i, J_i = ∂z_i/∂θ (z: logits); = H for the linear models
      "kfac"          C = blockdiag_l (A_l ⊗ S_l) / Σ_i c_i, A_l = Σ c x̃x̃ᵀ, S_l = Σ c Σ_r δ_r δ_rᵀ per layer l
                      (Martens & Grosse 2015, with the exact expectation over the model's own outputs)
      "ekfac"         the eigenbases Q_A ⊗ Q_S of K-FAC with the exact Gauss–Newton diagonal in them
                      (George et al. 2018; Grosse et al. 2023)

  (x̃, δ_r: `refsam.models.LayerFactors`.) The Kronecker curvatures are block-diagonal over
  layers; they are exact for one layer and one training point.
* Where SAM's terms go when C replaces H: **everywhere H appears**, at both points,

      J_C    = K_C(ŵ)(I + P K_C(θ) + S) + λ_out I                           ("full"; not symmetric)
      G_w V  = (1/n) [∇ℓ(ŵ) V + ∇ℓ(θ) (P K_C(ŵ) V)]                          (rows ∂G/∂w_j)
      "frozen": J_C = C(ŵ) + Λ, G_w = ∇ℓ(ŵ)/n;    "erm": J_C = C(θ) + Λ, G_w = ∇ℓ(θ)/n   (symmetric)

  (Λ = λI, or diag(λ_i) per coordinate.) With AdamW's fixed point every J_C is D (C + λ_in I) + λ_out I
  and every G_w carries D (the diagonal ∂G/∂g̃ of `refsam.influence.linearisation`).
  So K-FAC/EK-FAC of the "frozen" variant is what a large-scale implementation that treats ε as a
  constant computes (kronfluence at ŵ; its inverse is closed-form in
  the Kronecker eigenbasis, here a dense solve of the same matrix), and the "full" variant keeps SAM's
  ∂ε/∂θ and ∂ε/∂w terms with approximate curvature (solved by a Krylov method from cheap products).
* Every product is counted: one curvature product per column (``SystemOperators.products``), the
  cost unit the solvers report. A "full" Jᵀv costs 2 products, a frozen/erm one 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.linalg import LinearOperator

from ..errors import InvalidInputError
from ..models import BatchDerivatives, LayerFactors
from ..objective import Problem, decay_matrix, decay_times
from ..sam import SAM
from ..training import Optimizer, StepTerms, perturbations, root_scale
from ..training.linearised import LinearisedPerturbation
from ..validation import check_choice
from .fixed_point import FixedPoint
from .linearisation import check_root_inputs, lam_out, root_jacobian, scale_rows, symmetric_jacobian
from .methods import CLOSED_FORM_VARIANTS

__all__ = ["CURVATURES", "Curvature", "SystemOperators", "curvature_at", "system_operators"]

CURVATURES = ("exact", "gauss_newton", "kfac", "ekfac")

Array = NDArray[np.float64]


class Curvature:
    """C(x) for one curvature at one point x (module docstring): ``times(V)`` for a block V (d, k) and
    the dense ``matrix()`` (d, d). ``count`` is a one-element list shared with the caller; every column
    multiplied adds one."""

    def __init__(self, kind: str, derivatives: BatchDerivatives, count: list[int]) -> None:
        self.kind, self.derivatives, self.count = kind, derivatives, count
        self._dense: Array | None = None
        self._factors: list[LayerFactors] | None = None
        self._kron: list[tuple[Array, Array]] | None = None  # K-FAC (A, S), or EK-FAC (Q_A, Q_S)
        self._eigen: list[Array] | None = None  # EK-FAC's diagonal in Q_A ⊗ Q_S, per layer (in+1, out)
        if kind != "exact":
            try:
                self._factors = derivatives.layer_factors()
            except NotImplementedError as error:
                raise InvalidInputError(f"curvature={kind!r}: {error}") from None
        if kind in ("kfac", "ekfac"):
            self._build_kronecker()

    def _build_kronecker(self) -> None:
        assert self._factors is not None
        c = self.derivatives.c
        total = float(np.sum(c))
        kron, eigen = [], []
        for f in self._factors:
            A = (f.inputs * c[:, None]).T @ f.inputs  # Σ c x̃x̃ᵀ, (in+1, in+1)
            delta = f.outputs.reshape(-1, f.outputs.shape[2])  # (r·n, out)
            S = (delta * np.tile(c, f.outputs.shape[0])[:, None]).T @ delta  # Σ c Σ_r δδᵀ, (out, out)
            A, S = 0.5 * (A + A.T), 0.5 * (S + S.T)
            if self.kind == "kfac":
                kron.append((A / total if total != 0.0 else 0.0 * A, S))
                continue
            Q_A, Q_S = np.linalg.eigh(A)[1], np.linalg.eigh(S)[1]
            a = f.inputs @ Q_A  # (n, in+1): Q_Aᵀ x̃_i
            s = f.outputs @ Q_S  # (r, n, out): Q_Sᵀ δ_ri
            eigen.append(np.einsum("i,ia,rib->ab", c, a * a, s * s))  # Σ_i c_i Σ_r (Q x̃ ⊗ Q δ)²
            kron.append((Q_A, Q_S))
        self._kron, self._eigen = kron, (eigen if self.kind == "ekfac" else None)

    def adopt(self, matrix: Array) -> None:
        """Use an already-formed C(x) (d, d), e.g. the Hessian a dense solve built: products become
        matrix products instead of new Hessian-vector products (the same numbers to rounding)."""
        self._dense = matrix

    def times_and_rows(self, V: Array) -> tuple[Array, Array]:
        """(C(x) V, the per-sample rows ∇ℓ_j(x)ᵀ V (n, k)); the exact curvature shares one forward pass."""
        if self.kind == "exact" and self._dense is None:
            self.count[0] += V.shape[1]
            return self.derivatives.hvp_and_jvp(V)
        return self.times(V), self.derivatives.jvp(V)

    def times(self, V: Array) -> Array:
        """C(x) V, (d, k)."""
        self.count[0] += V.shape[1]
        if self._dense is not None:
            return self._dense @ V
        if self.kind == "exact":
            return self.derivatives.hvp(V)
        if self.kind == "gauss_newton":
            return self._gauss_newton_times(V)
        return self._kronecker_times(V)

    def _blocks(self, V: Array) -> list[Array]:
        """V's rows split by layer and reshaped to (in+1, out, k) (θ stores [W; b] row-major)."""
        assert self._factors is not None
        out, start = [], 0
        for f in self._factors:
            q, o = f.inputs.shape[1], f.outputs.shape[2]
            out.append(V[start:start + q * o].reshape(q, o, V.shape[1]))
            start += q * o
        return out

    def _gauss_newton_times(self, V: Array) -> Array:
        """Σ_i c_i Σ_r g_ri (g_riᵀ V) from the factors, g_riᵀ v = Σ_l x̃_liᵀ V_l δ_lri: no d × d matrix."""
        assert self._factors is not None
        blocks = self._blocks(V)
        proj = sum(np.einsum("iq,qok,rio->rik", f.inputs, B, f.outputs)
                   for f, B in zip(self._factors, blocks))  # g_riᵀ v, (r, n, k)
        weighted = self.derivatives.c[None, :, None] * proj
        return np.concatenate([np.einsum("iq,rio,rik->qok", f.inputs, f.outputs, weighted)
                               .reshape(-1, V.shape[1]) for f in self._factors])

    def _kronecker_times(self, V: Array) -> Array:
        """Per layer vec(A M Sᵀ) (K-FAC) or vec(Q_A [Λ ⊙ (Q_Aᵀ M Q_S)] Q_Sᵀ) (EK-FAC), M the layer's block."""
        assert self._kron is not None
        parts = []
        for l, (B, (left, right)) in enumerate(zip(self._blocks(V), self._kron)):
            M = np.moveaxis(B, 2, 0)  # (k, in+1, out)
            if self._eigen is None:
                out = left @ M @ right.T
            else:
                out = left @ (self._eigen[l][None] * (left.T @ M @ right)) @ right.T
            parts.append(np.moveaxis(out, 0, 2).reshape(-1, V.shape[1]))
        return np.concatenate(parts)

    def matrix(self) -> Array:
        """C(x) as a dense (d, d) matrix (not counted: it is what the direct solver factorises)."""
        if self._dense is None:
            if self.kind == "exact":
                self._dense = self.derivatives.hessian()
            elif self.kind == "gauss_newton":
                self._dense = self.derivatives.gauss_newton()
            else:
                assert self._kron is not None
                blocks = []
                for l, (left, right) in enumerate(self._kron):
                    if self._eigen is None:
                        blocks.append(np.kron(left, right))
                    else:
                        Q = np.kron(left, right)
                        blocks.append((Q * self._eigen[l].ravel()[None, :]) @ Q.T)
                self._dense = scipy.linalg.block_diag(*blocks)
        return self._dense


def curvature_at(problem: Problem, x: Array, kind: str = "exact",
                 count: list[int] | None = None) -> Curvature:
    """The curvature ``kind`` (`CURVATURES`) of the full-batch data term F_w at x."""
    kind = check_choice("curvature", kind, CURVATURES)
    return Curvature(kind, problem.at(x), [0] if count is None else count)


class SystemOperators:
    """The closed form's system at θ for one variant and curvature (module docstring), matrix-free.

    * ``jacobian``: J_C as a LinearOperator (d, d) (``rmatvec``: J_Cᵀ); ``jacobian_T`` is its adjoint,
      the operator the closed form solves with (J_Cᵀ v = ∇f).
    * ``weight_jacobian``: ∂G/∂w as a LinearOperator (n, d): ``matvec``/``matmat`` V ↦ G_w V (the
      influence is −G_w v), ``rmatvec`` u ↦ G_wᵀ u = Σ_j u_j ∂G/∂w_j.
    * ``products``: curvature products used so far; ``symmetric``: whether J_C is symmetric ("frozen",
      "erm", or ρ = 0 with any rule: then P = S = 0).
    """

    def __init__(self, problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array, variant: str,
                 curvature: str, terms: StepTerms | None = None) -> None:
        self.problem, self.sam, self.theta, self.variant = problem, sam, theta, variant
        self.optimizer = optimizer
        self.curvature_kind = check_choice("curvature", curvature, CURVATURES)
        g, w_hat = (None, None) if terms is None else (terms.g, terms.w_hat)
        (self.step,) = perturbations(problem, sam, theta, None, None, g, w_hat)  # the full-batch step at θ
        self.count = [0]
        self.lam_out = lam_out(optimizer)
        # D = ∂G/∂g̃: 1 for SGD and Adam, AdamW's diagonal at its fixed point
        assert self.step.descent is not None  # perturbations(..., descent=True)
        self.D = root_scale(optimizer, theta, self.step.descent)
        d, n = problem.d, problem.n
        if variant == "full":
            self.at_hat = curvature_at(problem, self.step.w_hat, curvature, self.count)
            self.at_theta = curvature_at(problem, theta, curvature, self.count)
            self.part = self._linearised(self.at_theta, self.at_hat)
        else:
            point = self.step.w_hat if variant == "frozen" else theta
            self.at_point = curvature_at(problem, point, curvature, self.count)
        # ρ = 0: P = S = 0, J_C = K_C(θ) + λ_out; a non-constant D makes every J_C unsymmetric
        self.symmetric = symmetric_jacobian(variant, sam.rho, self.D)
        self.jacobian = LinearOperator((d, d), matvec=self._J, rmatvec=self._J_T, matmat=self._J,
                                       rmatmat=self._J_T, dtype=np.float64)
        self.jacobian_T = self.jacobian.adjoint()
        self.weight_jacobian = LinearOperator((n, d), matvec=self._G_w, matmat=self._G_w,
                                              rmatvec=self._G_w_T, rmatmat=self._G_w_T, dtype=np.float64)

    def _linearised(self, at_theta: Curvature, at_hat: Curvature) -> LinearisedPerturbation:
        """The step's one linearisation with the curvature C in place of H at both points."""
        return LinearisedPerturbation(self.sam, self.problem.l2, self.theta, self.step, at_theta, at_hat)

    @property
    def products(self) -> int:
        return self.count[0]

    def minibatch_T(self, rng: np.random.Generator, batch_size: int) -> LinearOperator:
        """J_Cᵀ with each curvature taken on its own random minibatch (without replacement, c_i = w_i/|B|,
        an unbiased estimate of the full-batch curvature; the draws at ŵ and θ are independent, so their
        product is unbiased too): LiSSA's stochastic products. Counted like the full ones."""
        size = min(batch_size, self.problem.n)

        def draw(x: Array) -> Curvature:
            idx = np.sort(rng.choice(self.problem.n, size=size, replace=False))
            return Curvature(self.curvature_kind, self.problem.at(x, idx), self.count)

        other = SystemOperators.__new__(SystemOperators)
        other.__dict__.update(self.__dict__)
        if self.variant == "full":
            other.at_hat, other.at_theta = draw(self.step.w_hat), draw(self.theta)
            other.part = other._linearised(other.at_theta, other.at_hat)
        else:
            other.at_point = draw(self.at_point.derivatives.theta)
        d = self.problem.d
        return LinearOperator((d, d), matvec=other._J_T, matmat=other._J_T, dtype=np.float64)

    # -- J_C and J_Cᵀ: the step's tangent and cotangent (+ λ_out) ---------------------------------------
    def _K_point(self, V: Array) -> Array:
        """(C(point) + λ_in I) V, an ablation's curvature."""
        return self.at_point.times(V) + decay_times(self.problem.l2, V)

    def _J(self, V: Any) -> Array:
        V, single = _columns(V)
        if self.variant != "full":
            out = scale_rows(self.D, self._K_point(V)) + decay_times(self.lam_out, V)
        else:
            out = scale_rows(self.D, self.part.tangent(V)) + decay_times(self.lam_out, V)  # D M V + λ_out V
        return out[:, 0] if single else out

    def _J_T(self, U: Any) -> Array:
        U, single = _columns(U)
        if self.variant != "full":
            out = self._K_point(scale_rows(self.D, U)) + decay_times(self.lam_out, U)
        else:
            MtU = self.part.cotangent(scale_rows(self.D, U))[0]
            assert MtU is not None
            out = MtU + decay_times(self.lam_out, U)  # Mᵀ D U + λ_out U, Mᵀ = (I + Eᵀ) K(ŵ)
        return out[:, 0] if single else out

    # -- ∂G/∂w -----------------------------------------------------------------------------------------
    def _G_w(self, V: Any) -> Array:
        V, single = _columns(V)
        problem = self.problem
        DV = scale_rows(self.D, V)  # G_w V = rows of (∂g̃/∂c_j)ᵀ D V, c_j = w_j/n
        if self.variant != "full":
            out = self.at_point.derivatives.jvp(DV) / problem.n
        else:
            out = self.part.cotangent(DV, jacobian=False)[1] / problem.n
        return np.asarray(out[:, 0] if single else out, dtype=np.float64)

    def _G_w_T(self, U: Any) -> Array:
        U, single = _columns(U)
        problem = self.problem
        if self.variant != "full":
            out = np.stack([_weighted_grad(problem, self.at_point.derivatives, u) for u in U.T], axis=1)
        else:
            out = self.part.weight_tangent(U)
        out = scale_rows(self.D, out) / problem.n
        return np.asarray(out[:, 0] if single else out, dtype=np.float64)

    # -- dense, for the direct solver -------------------------------------------------------------------
    def dense_jacobian(self) -> Array:
        """J_C (d, d), from the curvature's dense matrices (the step's one formula for "full")."""
        d = self.problem.d
        if self.variant != "full":
            K = self.at_point.matrix() + decay_matrix(self.problem.l2, d)
            return root_jacobian(self.D, K, self.lam_out)
        return root_jacobian(self.D, self.part.jacobian(), self.lam_out)


def _weighted_grad(problem: Problem, derivatives: BatchDerivatives, u: Array) -> Array:
    """Σ_j u_j ∇ℓ_j(x) at the derivatives' point x, (d,)."""
    return problem.model.derivatives(derivatives.theta, derivatives.X, derivatives.y, u).grad()


def _columns(V: Any) -> tuple[Array, bool]:
    V = np.asarray(V, dtype=np.float64)
    return (V.reshape(-1, 1), True) if V.ndim == 1 else (V, False)


def system_operators(problem: Problem, sam: SAM, theta: ArrayLike | FixedPoint, variant: str = "full",
                     curvature: str = "exact", *, optimizer: Optimizer | None = None) -> SystemOperators:
    """The closed form's J_C, J_Cᵀ and ∂G/∂w at ``theta`` as LinearOperators (`SystemOperators`).

    Nothing d × d is formed for ``curvature="exact"`` or ``"gauss_newton"``; K-FAC and EK-FAC form their
    Kronecker factors only. ``theta`` need not be a root (the operators are those of the linearisation
    at θ); `refsam.hessian_influence()` checks the root before it solves. ``optimizer`` (default: a
    FixedPoint's) gives λ_out.
    """
    if isinstance(theta, FixedPoint):
        optimizer = theta.optimizer if optimizer is None else optimizer
        theta = theta.theta
    theta_arr, _ = check_root_inputs(problem, sam, theta, optimizer=optimizer)
    variant = check_choice("variant", variant, CLOSED_FORM_VARIANTS)
    return SystemOperators(problem, sam, optimizer, theta_arr, variant, curvature)
