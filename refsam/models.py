"""Models: per-sample losses on one flat float64 parameter vector θ, with exact derivatives.

Conventions
-----------
* ``theta`` is a flat float64 vector of length ``d = model.n_params(p)``; each model unpacks it.
* ``X`` has shape (n, p); ``y`` holds integer class labels, shape (n,).
* ``losses(theta, X, y)`` returns the per-sample losses ``ℓ_i(θ)``, shape (n,). It is written in
  ``autograd.numpy`` so autograd can differentiate it (it is the oracle for everything hand-written).
* Derivatives that combine samples take a coefficient vector ``c`` of shape (n,) and return
  ``Σ_i c_i ∇ℓ_i`` (``grad``), ``Σ_i c_i ∇²ℓ_i`` (``hessian``) or ``(Σ_i c_i ∇²ℓ_i) v`` (``hvp``).
  The objective layer (:mod:`refsam.objective`) passes ``c_i = w_i / |B|``.
* ``per_sample_grads(theta, X, y)`` returns the matrix of unweighted ``∇ℓ_i(θ)``, shape (n, d),
  computed without a Python loop over samples.

Logistic and softmax regression write gradient and Hessian by hand; the MLP writes its per-sample
gradients by hand (vectorised backpropagation), its Hessian-vector products with Pearlmutter's
R-operator and its Hessian layer by layer from pre-activation tangents (``MLP.hessian``). Tests check
every hand-written derivative against autograd (the base-class defaults).
"""

from __future__ import annotations

from typing import NamedTuple

import autograd.numpy as anp
import numpy as np
from autograd import grad as _ag_grad
from autograd import hessian as _ag_hessian
from autograd import jacobian as _ag_jacobian
from scipy.special import expit

from ._validation import check_choice, check_finite_array, check_positive_int, check_random_state


def _augment(X: np.ndarray) -> np.ndarray:
    """x̃ = [x, 1]: append the constant feature that multiplies the bias. (n, p) -> (n, p+1)."""
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _cross_entropy(z, y):
    """Softmax cross-entropy per sample, ℓ = logsumexp(z) − z_y (shifted by max z: stable).
    z (n, K) logits, y (n,) labels. autograd.numpy, so autograd differentiates it."""
    z_max = anp.max(z, axis=1, keepdims=True)
    log_norm = anp.log(anp.sum(anp.exp(z - z_max), axis=1)) + z_max[:, 0]
    z_y = anp.sum(z * (y[:, None] == anp.arange(z.shape[1])[None, :]), axis=1)
    return log_norm - z_y


def _softmax(z) -> np.ndarray:
    """π = softmax(z) row-wise, (n, K) -> (n, K)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Model:
    """Base class. Subclasses define ``losses`` (autograd.numpy) and may override derivatives.

    The defaults here compute every derivative with autograd from ``losses``; they are slow but
    independent of any hand derivation, which is what the tests compare against.
    """

    name = "model"

    # -- structure -----------------------------------------------------------------------------
    def n_params(self, n_features: int) -> int:
        raise NotImplementedError

    def init_params(self, n_features: int, seed=None) -> np.ndarray:
        """A seeded initial θ (small Gaussian entries), shape (d,)."""
        rng = check_random_state(seed)
        return 0.01 * rng.standard_normal(self.n_params(n_features))

    def spec(self) -> dict:
        """A JSON-able description from which :func:`model_from_spec` rebuilds this model."""
        return {"name": self.name}

    def check_data(self, X, y, name_X: str = "X", name_y: str = "y"):
        """Validate (X, y) for this model; returns (float64 X of shape (n, p), int64 y of shape (n,))."""
        X = check_finite_array(name_X, X, ndim=2)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or y_arr.shape[0] != X.shape[0]:
            raise ValueError(
                f"`{name_y}` must have shape ({X.shape[0]},) to match `{name_X}`, got {y_arr.shape}"
            )
        y_float = check_finite_array(name_y, y_arr, ndim=1)
        if np.any(y_float != np.round(y_float)):
            raise ValueError(f"`{name_y}` must hold integer class labels, got non-integer values")
        y_int = y_float.astype(np.int64)
        n_classes = self.n_classes
        if y_int.size and (y_int.min() < 0 or y_int.max() >= n_classes):
            raise ValueError(
                f"`{name_y}` labels must lie in 0..{n_classes - 1} for {self.name}, "
                f"got values in {y_int.min()}..{y_int.max()}"
            )
        return X, y_int

    def check_theta(self, theta, n_features: int, name: str = "theta") -> np.ndarray:
        """Validate a parameter vector for data with ``n_features`` columns."""
        return check_finite_array(name, theta, shape=(self.n_params(n_features),))

    @property
    def n_classes(self) -> int:
        raise NotImplementedError

    # -- loss and derivatives ------------------------------------------------------------------
    def losses(self, theta, X, y):
        """Per-sample losses ℓ_i(θ), shape (n,). Written in autograd.numpy."""
        raise NotImplementedError

    def per_sample_grads(self, theta, X, y) -> np.ndarray:
        """∇ℓ_i(θ) for every sample, shape (n, d). Default: autograd Jacobian of ``losses``."""
        return _ag_jacobian(lambda t: self.losses(t, X, y))(theta)

    def grad(self, theta, X, y, c) -> np.ndarray:
        """Σ_i c_i ∇ℓ_i(θ), shape (d,)."""
        return c @ self.per_sample_grads(theta, X, y)

    def hessian(self, theta, X, y, c) -> np.ndarray:
        """Σ_i c_i ∇²ℓ_i(θ), shape (d, d). Default: autograd Hessian."""
        return _ag_hessian(lambda t: anp.dot(c, self.losses(t, X, y)))(theta)

    def hvp(self, theta, X, y, c, v) -> np.ndarray:
        """(Σ_i c_i ∇²ℓ_i(θ)) v, shape (d,), without forming the Hessian. Default: autograd."""
        def directional_grad(t):
            return anp.dot(_ag_grad(lambda s: anp.dot(c, self.losses(s, X, y)))(t), v)

        return _ag_grad(directional_grad)(theta)

    def logits(self, theta, X):
        """Model outputs before the final link, shape (n,) for logistic, (n, K) otherwise."""
        raise NotImplementedError

    def predict_proba(self, theta, X) -> np.ndarray:
        """Class probabilities, shape (n, K)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({args})"


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

    def logits(self, theta, X):
        return anp.dot(X, theta[:-1]) + theta[-1]  # (n,)

    def losses(self, theta, X, y):
        sign = 1.0 - 2.0 * y  # +1 for y = 0, −1 for y = 1
        return anp.logaddexp(0.0, sign * self.logits(theta, X))  # log(1 + e^m), (n,)

    def predict_proba(self, theta, X) -> np.ndarray:
        z = self.logits(theta, X)
        return np.stack([expit(-z), expit(z)], axis=1)

    def _residual(self, theta, X, y) -> np.ndarray:
        """σ(z) − y = (1 − 2y) σ(m), shape (n,)."""
        sign = 1.0 - 2.0 * y
        return sign * expit(sign * self.logits(theta, X))

    def _curvature(self, theta, X) -> np.ndarray:
        """σ(z) σ(−z) = ∂²ℓ/∂z², shape (n,)."""
        z = self.logits(theta, X)
        return expit(z) * expit(-z)

    def per_sample_grads(self, theta, X, y) -> np.ndarray:
        return self._residual(theta, X, y)[:, None] * _augment(X)  # (σ(z) − y) x̃, (n, p+1)

    def grad(self, theta, X, y, c) -> np.ndarray:
        return _augment(X).T @ (c * self._residual(theta, X, y))

    def hessian(self, theta, X, y, c) -> np.ndarray:
        Xa = _augment(X)  # (n, p+1)
        return (Xa * (c * self._curvature(theta, X))[:, None]).T @ Xa  # Σ c_i σ(z)σ(−z) x̃ x̃ᵀ

    def hvp(self, theta, X, y, c, v) -> np.ndarray:
        Xa = _augment(X)
        return Xa.T @ (c * self._curvature(theta, X) * (Xa @ v))


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

    def __init__(self, n_classes: int):
        self._n_classes = check_positive_int("n_classes", n_classes, minimum=2)

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def spec(self) -> dict:
        return {"name": self.name, "n_classes": self._n_classes}

    def n_params(self, n_features: int) -> int:
        return (n_features + 1) * self._n_classes

    def _unpack(self, theta, n_features):
        return anp.reshape(theta, (n_features + 1, self._n_classes))  # Θ, (p+1, K)

    def logits(self, theta, X):
        Theta = self._unpack(theta, X.shape[1])
        return anp.dot(X, Theta[:-1]) + Theta[-1]  # (n, K)

    def losses(self, theta, X, y):
        return _cross_entropy(self.logits(theta, X), y)  # (n,)

    def predict_proba(self, theta, X) -> np.ndarray:
        return _softmax(self.logits(theta, X))  # (n, K)

    def per_sample_grads(self, theta, X, y) -> np.ndarray:
        residual = self.predict_proba(theta, X)  # π, (n, K)
        residual[np.arange(len(y)), y] -= 1.0  # π − e_y
        Xa = _augment(X)  # (n, p+1)
        return (Xa[:, :, None] * residual[:, None, :]).reshape(len(y), -1)  # (n, (p+1)K)

    def grad(self, theta, X, y, c) -> np.ndarray:
        residual = self.predict_proba(theta, X)
        residual[np.arange(len(y)), y] -= 1.0
        return (_augment(X).T @ (c[:, None] * residual)).ravel()

    def hessian(self, theta, X, y, c) -> np.ndarray:
        P = self.predict_proba(theta, X)  # (n, K)
        Xa = _augment(X)  # (n, q), q = p+1
        K, q = self._n_classes, Xa.shape[1]
        # S_i = diag(π_i) − π_i π_iᵀ, (n, K, K)
        S = P[:, :, None] * np.eye(K)[None] - P[:, :, None] * P[:, None, :]
        # H[(a,k),(b,l)] = Σ_i c_i x̃_ia x̃_ib S_i[k,l]
        H = np.einsum("ia,ib,ikl->akbl", Xa * c[:, None], Xa, S, optimize=True)
        return H.reshape(q * K, q * K)

    def hvp(self, theta, X, y, c, v) -> np.ndarray:
        P = self.predict_proba(theta, X)  # (n, K)
        Xa = _augment(X)
        V = v.reshape(Xa.shape[1], self._n_classes)  # (q, K)
        U = Xa @ V  # directional logits, (n, K)
        SU = P * U - P * np.sum(P * U, axis=1, keepdims=True)  # S_i u_i
        return (Xa.T @ (c[:, None] * SU)).ravel()


_ACTIVATIONS = {
    # name: (f, f') — smooth activations only; f' is used by the hand-written backpropagation.
    "tanh": (anp.tanh, lambda a: 1.0 - np.tanh(a) ** 2),
    "softplus": (lambda a: anp.logaddexp(0.0, a), lambda a: expit(a)),
    "sigmoid": (lambda a: 0.5 * (anp.tanh(0.5 * a) + 1.0), lambda a: expit(a) * (1.0 - expit(a))),
}


class MLP(Model):
    """Fully connected network with smooth activations and a softmax cross-entropy output.

    ``sizes = (p, h_1, …, h_L, K)``: input width, hidden widths, number of classes (K ≥ 2).
    Layer l maps a ↦ a W_l + b_l with W_l of shape (sizes[l], sizes[l+1]); θ concatenates
    W_1.ravel(), b_1, W_2.ravel(), b_2, … in that order. Hidden layers apply ``activation``
    (tanh, softplus or sigmoid — ReLU is excluded: the methods need second derivatives).
    ℓ(θ) = logsumexp(z) − z_y on the final logits z.
    """

    name = "mlp"

    def __init__(self, sizes, activation: str = "tanh"):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError(
                f"`sizes` must be a sequence of ints (n_features, hidden..., n_classes), got {sizes!r}"
            ) from None
        if len(sizes) < 2:
            raise ValueError(f"`sizes` must list at least (n_features, n_classes), got {sizes!r}")
        for s in sizes:
            check_positive_int("sizes entries", s)
        if sizes[-1] < 2:
            raise ValueError(f"`sizes[-1]` (number of classes) must be >= 2, got {sizes[-1]}")
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = check_choice("activation", activation, set(_ACTIVATIONS))

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    def spec(self) -> dict:
        return {"name": self.name, "sizes": list(self.sizes), "activation": self.activation}

    def n_params(self, n_features: int) -> int:
        if n_features != self.sizes[0]:
            raise ValueError(
                f"MLP input width sizes[0]={self.sizes[0]} does not match the data's "
                f"n_features={n_features}; build MLP(({n_features}, ...))"
            )
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def init_params(self, n_features: int, seed=None) -> np.ndarray:
        """Glorot-style init: W_l ~ N(0, 1/fan_in), b_l = 0."""
        rng = check_random_state(seed)
        self.n_params(n_features)  # validates the width
        parts = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(rng.standard_normal(fan_in * fan_out) / np.sqrt(fan_in))
            parts.append(np.zeros(fan_out))
        return np.concatenate(parts)

    def _unpack(self, theta):
        """[(W_1, b_1), …]: W_l (sizes[l], sizes[l+1]), b_l (sizes[l+1],)."""
        layers, start = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = anp.reshape(theta[start : start + fan_in * fan_out], (fan_in, fan_out))
            start += fan_in * fan_out
            b = theta[start : start + fan_out]
            start += fan_out
            layers.append((W, b))
        return layers

    def logits(self, theta, X):
        f = _ACTIVATIONS[self.activation][0]
        layers = self._unpack(theta)
        a = X
        for W, b in layers[:-1]:
            a = f(anp.dot(a, W) + b)
        W, b = layers[-1]
        return anp.dot(a, W) + b  # (n, K)

    def losses(self, theta, X, y):
        return _cross_entropy(self.logits(theta, X), y)  # (n,)

    def predict_proba(self, theta, X) -> np.ndarray:
        return _softmax(self.logits(theta, X))  # (n, K)

    def _backprop(self, theta, X, y):
        """Per-sample backpropagation. Returns [(a_{l-1}, δ_l)] per layer: inputs (n, in), δ (n, out).

        δ_L = π − e_y at the output; δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ f'(pre_l) below it, so that
        ∂ℓ_i/∂W_l = a_{l-1,i} δ_{l,i}ᵀ and ∂ℓ_i/∂b_l = δ_{l,i}.
        """
        f, f_prime = _ACTIVATIONS[self.activation]
        layers = self._unpack(theta)
        inputs, pre = [X], []
        for W, b in layers[:-1]:
            pre.append(inputs[-1] @ W + b)
            inputs.append(f(pre[-1]))
        W_out, b_out = layers[-1]
        z = inputs[-1] @ W_out + b_out
        z = z - z.max(axis=1, keepdims=True)
        delta = np.exp(z)
        delta /= delta.sum(axis=1, keepdims=True)
        delta[np.arange(len(y)), y] -= 1.0  # π − e_y, (n, K)
        out = [None] * len(layers)
        for l in range(len(layers) - 1, -1, -1):
            out[l] = (inputs[l], delta)
            if l > 0:
                delta = (delta @ layers[l][0].T) * f_prime(pre[l - 1])
        return out

    def per_sample_grads(self, theta, X, y) -> np.ndarray:
        n = X.shape[0]
        parts = []
        for a, delta in self._backprop(theta, X, y):
            parts.append((a[:, :, None] * delta[:, None, :]).reshape(n, -1))  # (n, in*out)
            parts.append(delta)  # (n, out)
        return np.concatenate(parts, axis=1)  # (n, d)

    def grad(self, theta, X, y, c) -> np.ndarray:
        parts = []
        for a, delta in self._backprop(theta, X, y):
            parts.append((a.T @ (c[:, None] * delta)).ravel())
            parts.append(c @ delta)
        return np.concatenate(parts)

    # -- second derivatives, exact and without autograd ---------------------------------------------
    def hvp(self, theta, X, y, c, v) -> np.ndarray:
        """(Σ_i c_i ∇²ℓ_i(θ)) v, shape (d,): one R-operator pass (:meth:`_hessian_rows`).

        Cost about three gradients; exact (tested against autograd to round-off).
        """
        return self._hessian_rows(theta, X, y, c, v[None, :])[0]

    def hessian(self, theta, X, y, c) -> np.ndarray:
        """Σ_i c_i ∇²ℓ_i(θ), shape (d, d): exact, assembled layer by layer from pre-activation tangents.

        Write W̃_m = [W_m; b_m], shape (in_m + 1, out_m) — θ stores exactly W̃_m.ravel() — and
        x̃_m = [a_{m-1}, 1], so pre_m = x̃_m W̃_m. For every layer l ≥ m the per-sample gradient
        ∇_{W̃_l} ℓ_i = x̃_{l,i} δ_{l,i}ᵀ depends on W̃_m only through pre_{m,i}; by the chain rule
            ∂²ℓ_i / ∂W̃_m[a, b] ∂W̃_l = x̃_{m,ia} R^{(m,b)}_{l,i},
            R^{(m,b)}_{l,i} = ∂(x̃_{l,i} δ_{l,i}ᵀ) / ∂pre_{m,ib} = ẋ̃_{l,i} δ_{l,i}ᵀ + x̃_{l,i} δ̇_{l,i}ᵀ,
        with ẋ̃_l = [ȧ_{l-1}, 0] and δ̇_l the tangents of the two passes started from ṗre_m = e_b
        (:meth:`_pre_activation_tangents`). So the rows (m, ·, b) of H, in the columns of layers ≥ m, are
        one matrix product
            H[(m, :, b), layers ≥ m] = (C x̃_m)ᵀ R^{(m,b)},   (in_m+1, n) @ (n, d_{≥m}),  C = diag(c),
        and the columns of layers < m follow by symmetry. Cost: Σ_m out_m such products, O(n d²)
        flops in all — about one multiply-add per sample and entry of the upper block triangle.
        """
        n, d = X.shape[0], theta.shape[0]
        if n == 0:
            return np.zeros((d, d))  # an empty sum
        max_samples = max(1, _HESSIAN_BLOCK_FLOATS // d)  # bounds the (samples, d) buffer R below
        if n > max_samples:  # H is a sum over samples: assemble it chunk by chunk
            H = np.zeros((d, d))
            for lo in range(0, n, max_samples):
                part = slice(lo, lo + max_samples)
                H += self.hessian(theta, X[part], y[part], c[part])
            return H
        primal = self._second_order_primal(theta, X, y)
        H = np.empty((d, d))
        units_per_block = max(1, _HESSIAN_BLOCK_FLOATS // (n * max(self.sizes) * len(self.sizes)))
        for m, (start, stop) in enumerate(self._layer_slices()):
            x_aug = _augment(primal.inputs[m])  # x̃_m, (n, in_m + 1)
            cx_T = (c[:, None] * x_aug).T  # (C x̃_m)ᵀ, (in_m + 1, n)
            out_m = self.sizes[m + 1]
            # rows (m, a, b) as [a, b, :]; a view (splitting the strided row axis never copies)
            rows_of_m = H[start:stop, start:].reshape(x_aug.shape[1], out_m, d - start)
            R = np.empty((n, d - start))  # R^{(m,b)}, one row per sample
            for lo in range(0, out_m, units_per_block):
                units = np.arange(lo, min(out_m, lo + units_per_block))
                tangents = self._pre_activation_tangents(primal, m, units)
                for r, b in enumerate(units):
                    self._fill_gradient_tangent(primal, m, tangents, r, R)
                    rows_of_m[:, b, :] = cx_T @ R  # H[(m, :, b), layers ≥ m]
            diagonal_block = H[start:stop, start:stop]
            diagonal_block[...] = 0.5 * (diagonal_block + diagonal_block.T)  # averages round-off only
            H[stop:, start:stop] = H[start:stop, stop:].T  # columns of layer m below it, by symmetry
        return H

    def _layer_slices(self):
        """[(start, stop)] of each layer's parameters W̃_l = (W_l, b_l) in θ."""
        slices, start = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            slices.append((start, start + (fan_in + 1) * fan_out))
            start += (fan_in + 1) * fan_out
        return slices

    def _second_order_primal(self, theta, X, y):
        """Forward and backward pass keeping what second derivatives need (a :class:`_Primal`).

            pre_l = a_{l-1} W_l + b_l,  a_l = f(pre_l) (hidden l),  z = pre_L,  π = softmax(z)
            δ_L = π − e_y,  δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ f'(pre_l)
        """
        layers = self._unpack(theta)
        inputs, slopes, curvatures = [X], [], []
        for W, b in layers[:-1]:
            a, slope, curvature = _activation_with_derivatives(self.activation, inputs[-1] @ W + b)
            inputs.append(a)
            slopes.append(slope)
            curvatures.append(curvature)
        W, b = layers[-1]
        z = inputs[-1] @ W + b
        z = z - z.max(axis=1, keepdims=True)
        pi = np.exp(z)
        pi /= pi.sum(axis=1, keepdims=True)  # (n, K)
        delta = pi.copy()
        delta[np.arange(X.shape[0]), y] -= 1.0  # π − e_y
        deltas = [delta]
        for l in range(len(layers) - 1, 0, -1):
            deltas.insert(0, (deltas[0] @ layers[l][0].T) * slopes[l - 1])
        return _Primal(layers, inputs, slopes, curvatures, deltas, pi)

    def _hessian_rows(self, theta, X, y, c, V) -> np.ndarray:
        """H vᵣ for each row vᵣ of V (k, d), H = Σ_i c_i ∇²ℓ_i(θ); returns (k, d).

        Pearlmutter's R-operator: differentiate backpropagation along v = (V_l, v_l)_l. With
        ṗre_l, ȧ_l, ż, δ̇_l the directional derivatives of pre_l, a_l, z, δ_l:
            forward,  l = 1..L (ȧ_0 = 0, z = pre_L, no activation on the last layer):
                pre_l = a_{l-1} W_l + b_l          ṗre_l = ȧ_{l-1} W_l + a_{l-1} V_l + v_l
                a_l   = f(pre_l)                   ȧ_l   = f'(pre_l) ⊙ ṗre_l
            output, π = softmax(z):
                δ_L = π − e_y                      δ̇_L  = π ⊙ ż − π (πᵀż)
            backward, l = L−1..1:
                δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ f'(pre_l)
                δ̇_l = (δ̇_{l+1} W_{l+1}ᵀ + δ_{l+1} V_{l+1}ᵀ) ⊙ f'(pre_l)
                      + (δ_{l+1} W_{l+1}ᵀ) ⊙ f''(pre_l) ⊙ ṗre_l
            gradient and its directional derivative, C = diag(c):
                ∇_{W_l} = a_{l-1}ᵀ C δ_l           (H v)_{W_l} = ȧ_{l-1}ᵀ C δ_l + a_{l-1}ᵀ C δ̇_l
                ∇_{b_l} = δ_lᵀ c                    (H v)_{b_l} = δ̇_lᵀ c
        """
        n, k = X.shape[0], V.shape[0]
        if n == 0:
            return np.zeros_like(V)  # an empty sum
        p = self._second_order_primal(theta, X, y)
        L = len(p.layers)
        directions = self._unpack_directions(V)  # [(V_l (k, in, out), v_l (k, out))]
        # 1. forward tangent: ṗre_l (k, n, out) and ȧ_l
        pre_dots, a_dot = [], None  # ȧ_0 = 0: the input does not depend on θ
        for l, (W, _) in enumerate(p.layers):
            V_l, v_l = directions[l]
            pre_dot = np.matmul(p.inputs[l], V_l) + v_l[:, None, :]  # a_{l-1} V_l + v_l, (k, n, out)
            if a_dot is not None:
                pre_dot += (a_dot.reshape(k * n, -1) @ W).reshape(k, n, -1)  # + ȧ_{l-1} W_l
            pre_dots.append(pre_dot)
            if l < L - 1:
                a_dot = p.slopes[l] * pre_dot
        # 2. output: δ̇_L = π ⊙ ż − π (πᵀż)
        z_dot = pre_dots[-1]  # (k, n, K)
        delta_dot = p.pi * z_dot - p.pi * np.sum(p.pi * z_dot, axis=2, keepdims=True)
        # 3. backward tangent, collecting (H v) layer by layer from the top
        out = [None] * L
        for l in range(L - 1, -1, -1):
            hv_W = np.matmul(p.inputs[l].T, c[:, None] * delta_dot)  # a_{l-1}ᵀ C δ̇_l, (k, in, out)
            if l > 0:
                a_dot_prev = p.slopes[l - 1] * pre_dots[l - 1]  # ȧ_{l-1}, (k, n, in)
                hv_W += np.matmul(a_dot_prev.transpose(0, 2, 1), c[:, None] * p.deltas[l])
            out[l] = (hv_W.reshape(k, -1), c @ delta_dot)  # (H v)_{W_l}, (H v)_{b_l} = δ̇_lᵀ c
            if l == 0:
                break
            W = p.layers[l][0]
            back = p.deltas[l] @ W.T  # δ_l W_lᵀ, (n, in)
            delta_dot = (delta_dot.reshape(k * n, -1) @ W.T).reshape(k, n, -1)
            delta_dot += np.matmul(p.deltas[l], directions[l][0].transpose(0, 2, 1))  # + δ_l V_lᵀ
            delta_dot *= p.slopes[l - 1]
            delta_dot += (back * p.curvatures[l - 1]) * pre_dots[l - 1]
        return np.concatenate([part for pair in out for part in pair], axis=1)

    def _pre_activation_tangents(self, primal, m: int, units) -> list:
        """Tangents of the passes above layer m along ṗre_m = e_b (every sample), for b in ``units``.

            forward,  l ≥ m:  ṗre_m = e_b,  ȧ_l = f'(pre_l) ⊙ ṗre_l,  ṗre_{l+1} = ȧ_l W_{l+1}
            output:           δ̇_L = π ⊙ ż − π (πᵀż)
            backward, l ≥ m:  δ̇_l = (δ̇_{l+1} W_{l+1}ᵀ) ⊙ f'(pre_l) + (δ_{l+1} W_{l+1}ᵀ) ⊙ f''(pre_l) ⊙ ṗre_l
        Returns [(ȧ_{l-1} or None for l = m, δ̇_l)] for l = m..L−1, arrays of shape (len(units), n, ·).
        """
        layers, L = primal.layers, len(primal.layers)
        n, k = primal.inputs[0].shape[0], len(units)
        pre_dot = np.zeros((k, n, self.sizes[m + 1]))
        pre_dot[np.arange(k), :, units] = 1.0  # ṗre_m = e_b
        pre_dots, a_dots = [pre_dot], [None]
        for l in range(m + 1, L):
            a_dots.append(primal.slopes[l - 1] * pre_dots[-1])  # ȧ_{l-1}
            pre_dots.append((a_dots[-1].reshape(k * n, -1) @ layers[l][0]).reshape(k, n, -1))
        pi = primal.pi
        delta_dot = pi * pre_dots[-1] - pi * np.sum(pi * pre_dots[-1], axis=2, keepdims=True)
        delta_dots = [delta_dot]
        for l in range(L - 1, m, -1):
            W = layers[l][0]
            back = primal.deltas[l] @ W.T  # δ_l W_lᵀ
            delta_dot = (delta_dot.reshape(k * n, -1) @ W.T).reshape(k, n, -1) * primal.slopes[l - 1]
            delta_dot += (back * primal.curvatures[l - 1]) * pre_dots[l - 1 - m]
            delta_dots.insert(0, delta_dot)
        return list(zip(a_dots, delta_dots))

    def _fill_gradient_tangent(self, primal, m: int, tangents, r: int, R) -> None:
        """Write R^{(m,b)} (see :meth:`hessian`) for tangent row r into R (n, d_{≥m}), layer by layer:
        R_l = ẋ̃_l δ_lᵀ + x̃_l δ̇_lᵀ per sample, laid out like W̃_l.ravel()."""
        n, offset = R.shape[0], 0
        for l, (a_dot, delta_dot) in zip(range(m, len(self.sizes) - 1), tangents):
            fan_in, fan_out = self.sizes[l] + 1, self.sizes[l + 1]
            R_l = R[:, offset:offset + fan_in * fan_out].reshape(n, fan_in, fan_out)  # a view
            np.multiply(primal.inputs[l][:, :, None], delta_dot[r][:, None, :], out=R_l[:, :-1])
            R_l[:, -1] = delta_dot[r]  # the bias row: x̃ = 1
            if a_dot is not None:
                R_l[:, :-1] += a_dot[r][:, :, None] * primal.deltas[l][:, None, :]
            offset += fan_in * fan_out

    def _unpack_directions(self, V):
        """Rows of V (k, d) split like θ: [(V_l (k, in, out), v_l (k, out))] per layer."""
        k, parts, start = V.shape[0], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            V_l = V[:, start:start + fan_in * fan_out].reshape(k, fan_in, fan_out)
            start += fan_in * fan_out
            parts.append((V_l, V[:, start:start + fan_out]))
            start += fan_out
        return parts


class _Primal(NamedTuple):
    """What :meth:`MLP._second_order_primal` keeps: per layer l (0-based) W_l, its input a_{l-1}, the
    hidden slopes f'(pre_l) and curvatures f''(pre_l), the backpropagated δ_l, and π = softmax(z)."""

    layers: list
    inputs: list
    slopes: list
    curvatures: list
    deltas: list
    pi: np.ndarray


# MLP.hessian holds about this many floats of tangents and gradient tangents at a time (≈ 32 MB),
# besides the (d, d) result.
_HESSIAN_BLOCK_FLOATS = 4_000_000


def _activation_with_derivatives(name: str, pre: np.ndarray):
    """(f(pre), f'(pre), f''(pre)) for the smooth hidden activations, sharing one evaluation.

        tanh      f = tanh        f' = 1 − f²        f'' = −2 f f'
        softplus  f = log(1+eᵃ)   f' = σ             f'' = σ (1 − σ)
        sigmoid   f = σ           f' = σ (1 − σ)     f'' = f' (1 − 2σ)
    """
    if name == "tanh":
        f = np.tanh(pre)
        slope = 1.0 - f**2
        return f, slope, -2.0 * f * slope
    s = expit(pre)
    if name == "softplus":
        return np.logaddexp(0.0, pre), s, s * (1.0 - s)
    slope = s * (1.0 - s)
    return 0.5 * (np.tanh(0.5 * pre) + 1.0), slope, slope * (1.0 - 2.0 * s)


def model_from_spec(spec: dict) -> Model:
    """Rebuild a model from :meth:`Model.spec` (used by saved trajectories and reference cases)."""
    name = spec.get("name")
    if name == "logistic":
        return LogisticRegression()
    if name == "softmax":
        return SoftmaxRegression(spec["n_classes"])
    if name == "mlp":
        return MLP(spec["sizes"], activation=spec.get("activation", "tanh"))
    raise ValueError(f"model spec `name` must be one of ['logistic', 'mlp', 'softmax'], got {name!r}")
