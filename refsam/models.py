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
gradients by hand (vectorised backpropagation) and takes its Hessian and Hessian-vector products from
autograd. Tests check every hand-written derivative against autograd.
"""

from __future__ import annotations

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

    With x̃ = [x, 1] and logit z = x̃ᵀθ:
        ℓ(θ)   = log(1 + e^z) − y z              (computed as logaddexp(0, z) − y z: stable)
        ∇ℓ(θ)  = (σ(z) − y) x̃
        ∇²ℓ(θ) = σ(z)(1 − σ(z)) x̃ x̃ᵀ
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
        z = self.logits(theta, X)  # (n,)
        return anp.logaddexp(0.0, z) - y * z

    def predict_proba(self, theta, X) -> np.ndarray:
        p1 = expit(self.logits(theta, X))
        return np.stack([1.0 - p1, p1], axis=1)

    def per_sample_grads(self, theta, X, y) -> np.ndarray:
        residual = expit(self.logits(theta, X)) - y  # σ(z) − y, (n,)
        return residual[:, None] * _augment(X)  # (n, p+1)

    def grad(self, theta, X, y, c) -> np.ndarray:
        residual = expit(self.logits(theta, X)) - y
        return _augment(X).T @ (c * residual)

    def hessian(self, theta, X, y, c) -> np.ndarray:
        s = expit(self.logits(theta, X))
        Xa = _augment(X)  # (n, p+1)
        return (Xa * (c * s * (1.0 - s))[:, None]).T @ Xa  # Σ c_i σ(1−σ) x̃ x̃ᵀ

    def hvp(self, theta, X, y, c, v) -> np.ndarray:
        s = expit(self.logits(theta, X))
        Xa = _augment(X)
        return Xa.T @ (c * s * (1.0 - s) * (Xa @ v))


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
        z = self.logits(theta, X)  # (n, K)
        z_max = anp.max(z, axis=1, keepdims=True)
        log_norm = anp.log(anp.sum(anp.exp(z - z_max), axis=1)) + z_max[:, 0]
        z_y = anp.sum(z * (y[:, None] == anp.arange(self._n_classes)[None, :]), axis=1)
        return log_norm - z_y

    def predict_proba(self, theta, X) -> np.ndarray:
        z = self.logits(theta, X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

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
        sizes = tuple(sizes)
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
        z = self.logits(theta, X)
        z_max = anp.max(z, axis=1, keepdims=True)
        log_norm = anp.log(anp.sum(anp.exp(z - z_max), axis=1)) + z_max[:, 0]
        z_y = anp.sum(z * (y[:, None] == anp.arange(self.n_classes)[None, :]), axis=1)
        return log_norm - z_y

    def predict_proba(self, theta, X) -> np.ndarray:
        z = self.logits(theta, X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

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
