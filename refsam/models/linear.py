"""Logistic and softmax regression with hand-written derivatives (one derivative object per model).

Conventions
-----------
* θ stores the weights first and the bias last: x̃ = [x, 1] is the augmented input. The derivative
  objects never build x̃: they apply the weights to X and add the bias row separately, so no (n, p+1)
  copy of X is made on any per-step path.
* Every derivative is of L(θ) = Σ_i c_i ℓ_i(θ) (see :mod:`refsam.models.base`); blocks of directions V
  are columns, shape (d, k).
"""

from __future__ import annotations

from typing import Any

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from ..validation import check_positive_int
from .base import Array, BatchDerivatives, Model, as_columns, cross_entropy, softmax

__all__ = ["LogisticDerivatives", "LogisticRegression", "SoftmaxDerivatives", "SoftmaxRegression"]


class LogisticRegression(Model):
    """Binary logistic regression, labels in {0, 1}; θ = (weights, bias), bias last, d = p + 1.

    With x̃ = [x, 1], logit z = x̃ᵀθ and the signed logit m = (1 − 2y) z (m = z for y = 0, −z for y = 1):
        ℓ(θ)   = log(1 + e^z) − y z = log(1 + e^m)      (computed as logaddexp(0, m))
        ∇ℓ(θ)  = (σ(z) − y) x̃ = (1 − 2y) σ(m) x̃
        ∇²ℓ(θ) = σ(z) σ(−z) x̃ x̃ᵀ                     (σ(z)(1 − σ(z)), without the cancellation)
    Written in m, every term keeps full relative precision for large |z| (a confidently right point
    has ℓ ≈ e^{−|z|}, not 0) and never overflows.
    """

    name = "logistic"

    @property
    def n_classes(self) -> int:
        return 2

    def n_params(self, n_features: int) -> int:
        return n_features + 1

    def logits(self, theta: Any, X: Any) -> Any:
        return anp.dot(X, theta[:-1]) + theta[-1]  # (n,)

    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        sign = 1.0 - 2.0 * y  # +1 for y = 0, −1 for y = 1
        return anp.logaddexp(0.0, sign * self.logits(theta, X))  # log(1 + e^m), (n,)

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        z = self.logits(np.asarray(theta, dtype=np.float64), np.asarray(X, dtype=np.float64))
        return np.stack([expit(-z), expit(z)], axis=1)

    def at(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
           c: ArrayLike | None = None) -> LogisticDerivatives:
        return LogisticDerivatives(self, theta, X, y, c)


class LogisticDerivatives(BatchDerivatives):
    """Logistic regression at one θ: residual r_i = σ(z_i) − y_i = (1 − 2y_i) σ(m_i) and curvature
    s_i = σ(z_i) σ(−z_i) (the model's stable forms), with z = X w + b:

        ∇L      = [Xᵀ (c ⊙ r),  Σ c ⊙ r]
        H V     = [Xᵀ (c ⊙ s ⊙ u),  Σ c ⊙ s ⊙ u],   u = X V_w + v_b   (directional logits, (n, k))
        ∇ℓ_iᵀ V = r_i u_i
        H       = [[Xᵀ D X, Xᵀ D 1], [1ᵀ D X, 1ᵀ D 1]],  D = diag(c ⊙ s)
    """

    def __init__(self, model: Model, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        z = self.X @ self.theta[:-1] + self.theta[-1]  # (n,)
        sign = 1.0 - 2.0 * self.y
        self.residual = sign * expit(sign * z)  # σ(z) − y
        self.curvature = expit(z) * expit(-z)  # σ(z) σ(−z)

    def _stack(self, weights_part: Array, bias_part: Array) -> Array:
        """[weights; bias] along the first axis: the layout of θ."""
        return np.concatenate([weights_part, bias_part[None]], axis=0)

    def grad(self) -> Array:
        cr = self.c * self.residual
        return self._stack(self.X.T @ cr, np.asarray(cr.sum()))

    def per_sample_grads(self) -> Array:
        out = np.empty((self.n, self.d))
        np.multiply(self.residual[:, None], self.X, out=out[:, :-1])  # (σ(z) − y) x
        out[:, -1] = self.residual  # the bias: x̃ = 1
        return out

    def _directional_logits(self, V: Array) -> Array:
        return self.X @ V[:-1] + V[-1]  # u = x̃ᵀ v, (n, k)

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        V, _ = as_columns(V)
        U = self._directional_logits(V)  # (n, k)
        weighted = (self.c * self.curvature)[:, None] * U  # c_i s_i u_i
        return self._stack(self.X.T @ weighted, weighted.sum(axis=0)), self.residual[:, None] * U

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = self.residual[:, None] * self._directional_logits(V)
        return JV[:, 0] if single else JV

    def hessian(self) -> Array:
        D = self.c * self.curvature  # (n,)
        H = np.empty((self.d, self.d))
        DX = D[:, None] * self.X  # (n, p)
        H[:-1, :-1] = self.X.T @ DX
        H[:-1, -1] = H[-1, :-1] = DX.sum(axis=0)
        H[-1, -1] = D.sum()
        return H


class SoftmaxRegression(Model):
    """Multinomial logistic regression, labels 0..K−1.

    θ is Θ.ravel() for Θ of shape (p+1, K): rows are features, the last row is the bias; d = (p+1)K.
    With logits z = Θᵀx̃ and probabilities π = softmax(z):
        ℓ(θ)   = logsumexp(z) − z_y
        ∇ℓ(θ)  = vec(x̃ (π − e_y)ᵀ)
        ∇²ℓ(θ) = (x̃ x̃ᵀ) ⊗ (diag(π) − π πᵀ)        (Kronecker, row-major vec)
    Without weight decay the loss is invariant to adding a constant to every class, so the Hessian
    is singular; closed-form influence needs λ > 0 for this model.
    """

    name = "softmax"

    def __init__(self, n_classes: int) -> None:
        self._n_classes = check_positive_int("n_classes", n_classes, minimum=2)

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "n_classes": self._n_classes}

    def n_params(self, n_features: int) -> int:
        return (n_features + 1) * self._n_classes

    def _unpack(self, theta: Any, n_features: int) -> Any:
        return anp.reshape(theta, (n_features + 1, self._n_classes))  # Θ, (p+1, K)

    def logits(self, theta: Any, X: Any) -> Any:
        Theta = self._unpack(theta, X.shape[1])
        return anp.dot(X, Theta[:-1]) + Theta[-1]  # (n, K)

    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        return cross_entropy(self.logits(theta, X), y)  # (n,)

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        return softmax(self.logits(np.asarray(theta, dtype=np.float64), np.asarray(X, dtype=np.float64)))

    def at(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
           c: ArrayLike | None = None) -> SoftmaxDerivatives:
        return SoftmaxDerivatives(self, theta, X, y, c)


class SoftmaxDerivatives(BatchDerivatives):
    """Softmax regression at one θ = vec(Θ), Θ (q, K), q = p + 1, with π_i = softmax(z_i), residual
    R_i = π_i − e_{y_i} and S_i = diag(π_i) − π_i π_iᵀ:

        ∇L      = vec([Xᵀ C R;  1ᵀ C R])                                   C = diag(c)
        H V     = vec([Xᵀ C SU;  1ᵀ C SU]),  SU_i = S_i u_i,  u_i = V_wᵀ x_i + v_b   (per column)
        ∇ℓ_iᵀ V = R_iᵀ u_i
        H       = Σ_k blockdiag_k(x̃ᵀ C diag(π_{:,k}) x̃) − Mᵀ C M,   M_i = vec(x̃_i π_iᵀ)   (two GEMMs)
    """

    def __init__(self, model: SoftmaxRegression, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        self.K = model.n_classes
        self.p = self.X.shape[1]
        Theta = self.theta.reshape(self.p + 1, self.K)
        self.pi = softmax(self.X @ Theta[:-1] + Theta[-1])  # π, (n, K)
        self.residual = self.pi.copy()
        self.residual[np.arange(self.n), self.y] -= 1.0  # π − e_y

    def _stack(self, weights_part: Array, bias_part: Array) -> Array:
        """[weights rows; bias row], then θ's row-major layout: (q, K, …) -> (q K, …)."""
        out = np.concatenate([weights_part, bias_part[None]], axis=0)
        return out.reshape(self.d, *out.shape[2:])

    def grad(self) -> Array:
        CR = self.c[:, None] * self.residual  # (n, K)
        return self._stack(self.X.T @ CR, CR.sum(axis=0))

    def per_sample_grads(self) -> Array:
        out = np.empty((self.n, self.p + 1, self.K))
        np.multiply(self.X[:, :, None], self.residual[:, None, :], out=out[:, :-1])
        out[:, -1] = self.residual
        return out.reshape(self.n, self.d)

    def _directional_logits(self, V: Array) -> Array:
        """u_i = V_wᵀ x_i + v_b for every column of V: (n, K, k)."""
        k = V.shape[1]
        V3 = V.reshape(self.p + 1, self.K, k)
        return (self.X @ V3[:-1].reshape(self.p, self.K * k)).reshape(self.n, self.K, k) + V3[-1]

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        V, _ = as_columns(V)
        k = V.shape[1]
        U = self._directional_logits(V)  # (n, K, k)
        pi = self.pi[:, :, None]
        SU = pi * U - pi * np.sum(pi * U, axis=1, keepdims=True)  # S_i u_i
        CSU = self.c[:, None, None] * SU
        top = (self.X.T @ CSU.reshape(self.n, self.K * k)).reshape(self.p, self.K, k)
        return self._stack(top, CSU.sum(axis=0)), np.einsum("ik,ikm->im", self.residual, U)

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = np.einsum("ik,ikm->im", self.residual, self._directional_logits(V))
        return JV[:, 0] if single else JV

    def hessian(self) -> Array:
        q, K = self.p + 1, self.K
        Xa = np.empty((self.n, q))
        Xa[:, :-1], Xa[:, -1] = self.X, 1.0  # x̃ (the Hessian is O(n d²): one copy of X is noise)
        M = (Xa[:, :, None] * self.pi[:, None, :]).reshape(self.n, q * K)  # M_i = vec(x̃_i π_iᵀ)
        H = -(M.T @ (self.c[:, None] * M))  # −Mᵀ C M, (qK, qK)
        H4 = H.reshape(q, K, q, K)  # a view: H[(a,k),(b,l)] = H4[a, k, b, l]
        for k in range(K):  # + x̃ᵀ C diag(π_{:,k}) x̃ on the (·, k), (·, k) block
            H4[:, k, :, k] += Xa.T @ ((self.c * self.pi[:, k])[:, None] * Xa)
        return H

