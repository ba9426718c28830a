"""The weighted objective of SPEC §1: sample weights, batches and weight decay.

Conventions
-----------
* Batch objective on index set B with sample weights w (default all ones):
      F_{B,w}(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ)           (mean over the batch, 1/|B| — not 1/Σw)
  The full batch is B = [n]. ``grad``, ``hessian`` and ``hvp`` are derivatives of this data term only.
* Regulariser r(θ) = (λ/2)‖θ‖², λ = ``weight_decay``, in one of two modes:
  ``"decoupled"`` (default): the SAM perturbation uses ∇F only; λθ is added at the unperturbed point.
  ``"coupled"``: r is part of the loss everywhere. The SAM step (:mod:`refsam.training`) applies the mode.
* ``idx`` selects a batch (an int array of indices into the training set); ``None`` is the full batch.
  ``weights`` overrides the problem's sample weights for one call (used by ground-truth re-solves and by
  autodiff with respect to w).
"""

from __future__ import annotations

import hashlib

import autograd.numpy as anp
import numpy as np

from ._validation import check_choice, check_finite_array, check_nonnegative
from .models import Model

REGULARIZATION_MODES = ("decoupled", "coupled")


class Problem:
    """A model, training data (X, y), sample weights w and weight decay λ in a regularisation mode.

    Parameters
    ----------
    model : Model
        A :class:`~refsam.LogisticRegression`, :class:`~refsam.SoftmaxRegression` or :class:`~refsam.MLP`.
    X : array, shape (n, p)
    y : array of int, shape (n,)
    weight_decay : float >= 0
        λ in r(θ) = (λ/2)‖θ‖².
    weights : array, shape (n,), entries >= 0, optional
        Sample weights w; default all ones. Influence is the derivative with respect to these at w = 1.
    regularization : {"decoupled", "coupled"}
    """

    def __init__(self, model: Model, X, y, weight_decay: float = 0.0, weights=None,
                 regularization: str = "decoupled"):
        if not isinstance(model, Model):
            raise ValueError(
                f"`model` must be a refsam model (LogisticRegression, SoftmaxRegression, MLP), "
                f"got {type(model).__name__}"
            )
        self.model = model
        X, self.y = model.check_data(X, y)
        self.X = X.copy()  # the problem owns its data: later edits of the caller's array cannot leak in
        if self.X.shape[0] == 0:
            raise ValueError("`X` must have at least one row, got 0")
        self.n, self.p = self.X.shape
        self.d = model.n_params(self.p)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.regularization = check_choice("regularization", regularization, REGULARIZATION_MODES)
        self.weights = self.check_weights(weights)

    # -- validation and copies -------------------------------------------------------------------
    def check_weights(self, weights, name: str = "weights") -> np.ndarray:
        """Validate a weight vector for this problem; None means all ones."""
        if weights is None:
            return np.ones(self.n)
        w = check_finite_array(name, weights, shape=(self.n,))
        if np.any(w < 0):
            raise ValueError(f"`{name}` must be >= 0, got minimum {float(w.min())!r}")
        return w.copy()  # a copy: problems and recorded runs must not alias the caller's array

    def check_theta(self, theta, name: str = "theta") -> np.ndarray:
        return self.model.check_theta(theta, self.p, name=name)

    def with_weights(self, weights) -> Problem:
        """The same problem with sample weights ``weights`` (e.g. w_j = 0 for leave-one-out)."""
        return Problem(self.model, self.X, self.y, self.weight_decay, weights, self.regularization)

    def init_params(self, seed=None) -> np.ndarray:
        """The model's seeded initial θ for this data, shape (d,)."""
        return self.model.init_params(self.p, seed)

    def data_fingerprint(self) -> str:
        """sha256 of (X, y): lets a saved trajectory check it is replayed on the same data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.X).tobytes())
        h.update(np.ascontiguousarray(self.y).astype(np.int64).tobytes())
        return h.hexdigest()

    # -- the objective and its derivatives -------------------------------------------------------
    def _coefficients(self, idx, weights):
        """(X_B, y_B, c) with c_i = w_i/|B| for i ∈ B: the per-sample factors of F_{B,w}."""
        w = self.weights if weights is None else weights
        if idx is None:
            return self.X, self.y, w / self.n
        return self.X[idx], self.y[idx], w[idx] / len(idx)

    def losses(self, theta, idx=None):
        """Unweighted per-sample losses ℓ_i(θ) for i ∈ B, shape (|B|,)."""
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        return self.model.losses(theta, X, y)

    def objective(self, theta, idx=None, weights=None):
        """F_{B,w}(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ). Written in autograd.numpy (differentiable in θ and w)."""
        X, y, c = self._coefficients(idx, weights)
        return anp.dot(c, self.model.losses(theta, X, y))

    def regularizer(self, theta):
        """r(θ) = (λ/2)‖θ‖²."""
        return 0.5 * self.weight_decay * anp.dot(theta, theta)

    def per_sample_grads(self, theta, idx=None) -> np.ndarray:
        """Unweighted ∇ℓ_i(θ) for i ∈ B, shape (|B|, d)."""
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        return self.model.per_sample_grads(theta, X, y)

    def grad(self, theta, idx=None, weights=None) -> np.ndarray:
        """∇F_{B,w}(θ), shape (d,). Data term only (no λθ)."""
        X, y, c = self._coefficients(idx, weights)
        return self.model.grad(theta, X, y, c)

    def hessian(self, theta, idx=None, weights=None) -> np.ndarray:
        """∇²F_{B,w}(θ), shape (d, d). Data term only (no λI). Cost: O(|B| d²) or d autograd passes."""
        X, y, c = self._coefficients(idx, weights)
        return self.model.hessian(theta, X, y, c)

    def hvp(self, theta, v, idx=None, weights=None) -> np.ndarray:
        """∇²F_{B,w}(θ) v, shape (d,), without forming the Hessian. Data term only."""
        X, y, c = self._coefficients(idx, weights)
        return self.model.hvp(theta, X, y, c, v)

    def __repr__(self) -> str:
        return (
            f"Problem({self.model!r}, n={self.n}, p={self.p}, d={self.d}, "
            f"weight_decay={self.weight_decay}, regularization={self.regularization!r})"
        )
