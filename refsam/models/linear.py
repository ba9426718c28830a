"""Logistic and softmax regression with hand-written derivatives (one derivative object per model).

Conventions
-----------
* θ stores the weights first and the bias last: x̃ = [x, 1] is the augmented input, the linear models'
  ``design``. A `Problem` builds it once; the derivative objects read rows of it, so
  every product is one matrix product with x̃ and no step rebuilds it.
* Every derivative is of L(θ) = Σ_i c_i ℓ_i(θ) (see `refsam.models.base`); blocks of directions V
  are columns, shape (d, k).
"""

from __future__ import annotations

from typing import Any

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from ..validation import check_positive_int
from .base import (
    Array,
    BatchDerivatives,
    LayerFactors,
    Model,
    as_columns,
    check_label_smoothing,
    cross_entropy,
    smoothed_residual,
    softmax,
    weighted_gram,
)

__all__ = ["LogisticDerivatives", "LogisticRegression", "SoftmaxDerivatives", "SoftmaxRegression", "augment",
           "output_hessian_root"]


class LogisticRegression(Model):
    """Binary logistic regression, labels in {0, 1}; θ = (weights, bias), bias last, d = p + 1.

    With x̃ = [x, 1], logit z = x̃ᵀθ and the signed logit m = (1 − 2y) z (m = z for y = 0, −z for y = 1):
        ℓ(θ)   = log(1 + e^z) − y z = log(1 + e^m)      (computed as logaddexp(0, m))
        ∇ℓ(θ)  = (σ(z) − y) x̃ = (1 − 2y) σ(m) x̃
        ∇²ℓ(θ) = σ(z) σ(−z) x̃ x̃ᵀ                     (σ(z)(1 − σ(z)), without the cancellation)
    Written in m, every term keeps full relative precision for large |z| (a confidently right point
    has ℓ ≈ e^{−|z|}, not 0) and never overflows.

    ``label_smoothing`` α > 0 replaces the target y by q = (1 − α) y + α/2:
        ℓ = q log(1 + e^{−z}) + (1 − q) log(1 + e^z),   ∇ℓ = (σ(z) − q) x̃ = [(σ(z) − y) + α (y − ½)] x̃,
    with the same curvature σ(z) σ(−z).
    """

    name = "logistic"
    convex = True  # the logistic loss is convex in θ

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def spec(self) -> dict[str, Any]:
        smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        return {"name": self.name, **smoothing}

    def bias_mask(self, n_features: int) -> NDArray[np.bool_]:
        mask = np.zeros(self.n_params(n_features), dtype=bool)
        mask[-1] = True
        return mask

    @property
    def n_classes(self) -> int:
        return 2

    def n_params(self, n_features: int) -> int:
        return n_features + 1

    def logits(self, theta: Any, X: Any) -> Any:
        return anp.dot(X, theta[:-1]) + theta[-1]  # (n,)

    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        z = self.logits(theta, X)
        if self.label_smoothing:
            q = (1.0 - self.label_smoothing) * y + 0.5 * self.label_smoothing
            return q * anp.logaddexp(0.0, -z) + (1.0 - q) * anp.logaddexp(0.0, z)
        sign = 1.0 - 2.0 * y  # +1 for y = 0, −1 for y = 1
        return anp.logaddexp(0.0, sign * z)  # log(1 + e^m), (n,)

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        z = self.logits(np.asarray(theta, dtype=np.float64), np.asarray(X, dtype=np.float64))
        return np.stack([expit(-z), expit(z)], axis=1)

    def design(self, X: ArrayLike) -> Array:
        return augment(X)

    def derivatives(self, theta: ArrayLike, design: ArrayLike, y: ArrayLike,
                    c: ArrayLike | None = None) -> LogisticDerivatives:
        return LogisticDerivatives(self, theta, design, y, c)

    def column_grads(self, theta: Array, design: Array, y: Array, c: Array) -> Array:
        """x̃ᵀ (c ⊙ r) for every column: z = x̃ θ (n, K), r = (1 − 2y) σ((1 − 2y) z) (+ α(y − ½))."""
        sign = (1.0 - 2.0 * y)[:, None]
        residual = sign * expit(sign * (design @ theta))
        if self.label_smoothing:
            residual += self.label_smoothing * (y[:, None] - 0.5)
        return np.asarray(design.T @ (c * residual), dtype=np.float64)


class LogisticDerivatives(BatchDerivatives):
    """Logistic regression at one θ on rows x̃_i of the design: residual r_i = σ(z_i) − y_i =
    (1 − 2y_i) σ(m_i) and curvature s_i = σ(z_i) σ(−z_i) (the model's stable forms), z = x̃ᵀθ:

        ∇L      = x̃ᵀ (c ⊙ r)
        H V     = x̃ᵀ (c ⊙ s ⊙ (x̃ V))
        ∇ℓ_iᵀ V = r_i (x̃ V)_i
        H       = (x̃ ⊙ (c ⊙ s))ᵀ x̃
    """

    def __init__(self, model: LogisticRegression, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        self.alpha = model.label_smoothing
        self.z = self.X @ self.theta  # (n,)
        sign = 1.0 - 2.0 * self.y
        self.margin = sign * self.z  # m = (1 − 2y) z
        self.residual = sign * expit(self.margin)  # σ(z) − y
        if self.alpha:
            self.residual += self.alpha * (self.y - 0.5)  # σ(z) − q
        self.curvature = expit(self.z) * expit(-self.z)  # σ(z) σ(−z)

    def losses(self) -> Array:
        if self.alpha:
            q = (1.0 - self.alpha) * self.y + 0.5 * self.alpha
            return q * np.logaddexp(0.0, -self.z) + (1.0 - q) * np.logaddexp(0.0, self.z)
        return np.logaddexp(0.0, self.margin)  # log(1 + e^m)

    def grad(self) -> Array:
        return np.asarray(self.X.T @ (self.c * self.residual), dtype=np.float64)

    def per_sample_grads(self) -> Array:
        return np.asarray(self.residual[:, None] * self.X, dtype=np.float64)  # (σ(z) − y) x̃, (n, d)

    def per_sample_grad_norms(self) -> Array:
        return np.asarray(np.abs(self.residual) * _row_norms(self.X), dtype=np.float64)  # |r_i| ‖x̃_i‖

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        V, _ = as_columns(V)
        XV = self.X @ V  # x̃ᵀ v, (n, k)
        return self.X.T @ ((self.c * self.curvature)[:, None] * XV), self.residual[:, None] * XV

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = self.residual[:, None] * (self.X @ V)
        return np.asarray(JV[:, 0] if single else JV, dtype=np.float64)

    def hessian(self) -> Array:
        return weighted_gram(self.X, self.c * self.curvature)  # Σ c_i s_i x̃_i x̃_iᵀ (a rank-n update)

    def layer_factors(self) -> list[LayerFactors]:
        """One layer, one output: x̃ and δ = √s (∂²ℓ/∂z² = s = σ(z)σ(−z), label smoothing or not)."""
        return [LayerFactors(self.X, np.sqrt(self.curvature)[None, :, None])]


class SoftmaxRegression(Model):
    """Multinomial logistic regression, labels 0..K−1.

    θ is Θ.ravel() for Θ of shape (p+1, K): rows are features, the last row is the bias; d = (p+1)K.
    With logits z = Θᵀx̃ and probabilities π = softmax(z):
        ℓ(θ)   = logsumexp(z) − z_y
        ∇ℓ(θ)  = vec(x̃ (π − e_y)ᵀ)
        ∇²ℓ(θ) = (x̃ x̃ᵀ) ⊗ (diag(π) − π πᵀ)        (Kronecker, row-major vec)
    Without weight decay the loss is invariant to adding a constant to every class, so the Hessian
    is singular; closed-form influence needs λ > 0 for this model.

    ``label_smoothing`` α > 0 replaces e_y by q = (1 − α) e_y + α/K: ℓ = logsumexp(z) − qᵀz,
    ∇ℓ = vec(x̃ (π − q)ᵀ), and the Hessian is unchanged (it does not depend on the target).
    """

    name = "softmax"
    convex = True  # logsumexp(z) − qᵀz is convex in θ

    def __init__(self, n_classes: int, label_smoothing: float = 0.0) -> None:
        self._n_classes = check_positive_int("n_classes", n_classes, minimum=2)
        self.label_smoothing = check_label_smoothing(label_smoothing)

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def spec(self) -> dict[str, Any]:
        smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        return {"name": self.name, "n_classes": self._n_classes, **smoothing}

    def bias_mask(self, n_features: int) -> NDArray[np.bool_]:
        mask = np.zeros((n_features + 1, self._n_classes), dtype=bool)
        mask[-1] = True  # the last row of Θ
        return mask.ravel()

    def n_params(self, n_features: int) -> int:
        return (n_features + 1) * self._n_classes

    def _unpack(self, theta: Any, n_features: int) -> Any:
        return anp.reshape(theta, (n_features + 1, self._n_classes))  # Θ, (p+1, K)

    def logits(self, theta: Any, X: Any) -> Any:
        Theta = self._unpack(theta, X.shape[1])
        return anp.dot(X, Theta[:-1]) + Theta[-1]  # (n, K)

    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        return cross_entropy(self.logits(theta, X), y, self.label_smoothing)  # (n,)

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        return softmax(self.logits(np.asarray(theta, dtype=np.float64), np.asarray(X, dtype=np.float64)))

    def design(self, X: ArrayLike) -> Array:
        return augment(X)

    def derivatives(self, theta: ArrayLike, design: ArrayLike, y: ArrayLike,
                    c: ArrayLike | None = None) -> SoftmaxDerivatives:
        return SoftmaxDerivatives(self, theta, design, y, c)

    def column_grads(self, theta: Array, design: Array, y: Array, c: Array) -> Array:
        """vec(x̃ᵀ C_k R_k) for every column k: logits of all columns in one product, (d, K)."""
        q, K, runs = design.shape[1], self._n_classes, theta.shape[1]
        logits = (design @ theta.reshape(q, K * runs)).reshape(-1, K, runs)  # (n, K classes, runs)
        residual = smoothed_residual(softmax(logits), y, self.label_smoothing)  # both act on axes 0, 1
        weighted = (c[:, None, :] * residual).reshape(-1, K * runs)
        return np.asarray((design.T @ weighted).reshape(q * K, runs), dtype=np.float64)


class SoftmaxDerivatives(BatchDerivatives):
    """Softmax regression at one θ = vec(Θ), Θ (q, K), q = p + 1, on rows x̃_i of the design, with
    π_i = softmax(Θᵀx̃_i), residual R_i = π_i − e_{y_i} and S_i = diag(π_i) − π_i π_iᵀ:

        ∇L      = vec(x̃ᵀ C R)                                          C = diag(c)
        H V     = vec(x̃ᵀ C SU),  SU_i = S_i u_i,  u_i = Vᵀ x̃_i (directional logits, per column)
        ∇ℓ_iᵀ V = R_iᵀ u_i
        H       = Σ_k blockdiag_k(x̃ᵀ C diag(π_{:,k}) x̃) − Mᵀ C M,   M_i = vec(x̃_i π_iᵀ)
                                                            (symmetric rank-n updates, BLAS dsyrk)
    """

    def __init__(self, model: SoftmaxRegression, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        self.K = model.n_classes
        self.q = self.X.shape[1]  # p + 1
        self.alpha = model.label_smoothing
        self.logits = self.X @ self.theta.reshape(self.q, self.K)  # z, (n, K)
        self.pi = softmax(self.logits)  # π, (n, K)
        self.residual = smoothed_residual(self.pi, self.y, self.alpha)  # π − q (q = e_y without smoothing)

    def losses(self) -> Array:
        return np.asarray(cross_entropy(self.logits, self.y, self.alpha), dtype=np.float64)

    def grad(self) -> Array:
        return np.asarray((self.X.T @ (self.c[:, None] * self.residual)).ravel(), dtype=np.float64)

    def per_sample_grads(self) -> Array:
        return (self.X[:, :, None] * self.residual[:, None, :]).reshape(self.n, self.d)

    def per_sample_grad_norms(self) -> Array:
        norms = _row_norms(self.X) * np.linalg.norm(self.residual, axis=1)  # ‖x̃_i ⊗ R_i‖
        return np.asarray(norms, dtype=np.float64)

    def _directional_logits(self, V: Array) -> Array:
        """u_i = Vᵀ x̃_i for every column of V: (n, K, k)."""
        k = V.shape[1]
        return (self.X @ V.reshape(self.q, self.K * k)).reshape(self.n, self.K, k)

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        V, _ = as_columns(V)
        k = V.shape[1]
        U = self._directional_logits(V)  # (n, K, k)
        pi = self.pi[:, :, None]
        SU = pi * U - pi * np.sum(pi * U, axis=1, keepdims=True)  # S_i u_i
        CSU = (self.c[:, None, None] * SU).reshape(self.n, self.K * k)
        return (self.X.T @ CSU).reshape(self.d, k), np.einsum("ik,ikm->im", self.residual, U)

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = np.einsum("ik,ikm->im", self.residual, self._directional_logits(V))
        return np.asarray(JV[:, 0] if single else JV, dtype=np.float64)

    def hessian(self) -> Array:
        q, K, Xa = self.q, self.K, self.X
        M = (Xa[:, :, None] * self.pi[:, None, :]).reshape(self.n, q * K)  # M_i = vec(x̃_i π_iᵀ)
        H = -weighted_gram(M, self.c)  # −Mᵀ C M, (qK, qK)
        H4 = H.reshape(q, K, q, K)  # a view: H[(a,k),(b,l)] = H4[a, k, b, l]
        for k in range(K):  # + x̃ᵀ C diag(π_{:,k}) x̃ on the (·, k), (·, k) block
            H4[:, k, :, k] += weighted_gram(Xa, self.c * self.pi[:, k])
        return H

    def layer_factors(self) -> list[LayerFactors]:
        """One layer: x̃ and the K columns of R_i, R_i[k, r] = √π_r (δ_kr − π_k), R_i R_iᵀ = S_i."""
        return [LayerFactors(self.X, output_hessian_root(self.pi))]


def output_hessian_root(pi: Array) -> Array:
    """Columns r of R_i with R_i R_iᵀ = diag(π_i) − π_i π_iᵀ (the softmax cross-entropy's Hessian in the
    logits, whatever the labels or their smoothing): R_i[:, r] = √π_ir (e_r − π_i). Shape (K, n, K)."""
    K = pi.shape[1]
    return np.asarray(np.sqrt(pi).T[:, :, None] * (np.eye(K)[:, None, :] - pi[None, :, :]), dtype=np.float64)


def augment(X: ArrayLike) -> Array:
    """x̃ = [x, 1]: the input with the constant feature that multiplies the bias, (n, p) -> (n, p+1)."""
    X = np.asarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], X.shape[1] + 1))
    out[:, :-1], out[:, -1] = X, 1.0
    return out


def _row_norms(A: Array) -> Array:
    """‖a_i‖ for every row, without the (n, d) temporary of np.linalg.norm(A, axis=1)."""
    return np.asarray(np.sqrt(np.einsum("ij,ij->i", A, A)), dtype=np.float64)
