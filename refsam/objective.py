"""The weighted objective (docs/contract.md §1): sample weights, batches and the loss-level L2 term.

Conventions
-----------
* Batch objective on index set B with sample weights w (default all ones):
      F_{B,w}(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ)           (mean over the batch, 1/|B| — not 1/Σw)
  The full batch is B = [n]. ``grad``, ``hessian`` and ``hvp`` are derivatives of this data term only.
* An optional L2 term that is **part of the loss**, r(θ) = (λ/2)‖θ‖² with λ = ``l2`` (or
  r(θ) = ½ Σ_i λ_i θ_i² for a per-coordinate λ, an array (d,)): the SAM perturbation sees it (the
  gradient ε is built from is ∇(F + r)) and so does the descent gradient at the perturbed point. This is
  where the JAX SAM code puts its L2 penalty. Weight decay as ``torch.optim`` applies it (added at the
  unperturbed point, never seen by the perturbation) belongs to the optimizer instead:
  ``refsam.SGD(..., weight_decay=λ)`` (`refsam.training.optimizers`).
* ``idx`` selects a batch (an int array of indices into the training set); ``None`` is the full batch.
  A batch that is all of [n] in order is served without copying X.
  ``weights`` overrides the problem's sample weights for one call (used by ground-truth re-solves and by
  autodiff with respect to w).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InvalidInputError
from .models import BatchDerivatives, Model
from .validation import check_finite_array, check_nonnegative

__all__ = ["Problem", "check_problem", "decay_matrix", "decay_times", "reuse_derivatives"]

Array = NDArray[np.float64]
Index = ArrayLike | None

# -- reusing full-batch derivatives within one computation ------------------------------------------------
_REUSED: ContextVar[dict[tuple[int, bytes, bytes], tuple[Array, BatchDerivatives]] | None] = ContextVar(
    "refsam_reused_derivatives", default=None)
REUSED_POINTS = 4  # full-batch points kept: θ̂ and ŵ, and a Newton step's previous pair


@contextmanager
def reuse_derivatives() -> Iterator[None]:
    """Within the block, `Problem.at()` on the full batch returns one derivatives object per
    (design, θ, weights) — the same values, computed once.

    The closed form meets θ̂ and ŵ in the root check, in both Hessians and in the products with ∂G/∂w:
    seven passes over X where two suffice (a pass is ≈ 1 ms at n = 5000, d = 301). The key is the
    content of θ and w (so in-place edits of either between calls cannot return stale values) and the
    design array's identity, whose reference the entry holds; θ is copied into the object. Nested blocks
    share the outer block's store; each thread and context has its own (``contextvars``). Outside a
    block nothing is kept.
    """
    if _REUSED.get() is not None:
        yield
        return
    token = _REUSED.set({})
    try:
        yield
    finally:
        _REUSED.reset(token)


class Problem:
    """A model, training data (X, y), sample weights w and an optional L2 term that is part of the loss.

    Parameters
    ----------
    model : Model
        A `LogisticRegression`, `SoftmaxRegression`, `MLP`
        or your own `Model`.
    X : array, shape (n, p)
    y : array of int, shape (n,)
    weights : array, shape (n,), entries >= 0, optional
        Sample weights w; default all ones. Influence is the derivative with respect to these at w = 1.
    l2 : float >= 0, or array (d,) of floats >= 0
        λ of the loss-level term r(θ) = (λ/2)‖θ‖² (per coordinate: ½ Σ_i λ_i θ_i², e.g.
        ``np.where(model.bias_mask(p), 0.0, λ)`` for weight matrices only). The perturbation sees it.
        Weight decay in the optimizer is ``refsam.SGD(..., weight_decay=λ)``.
    """

    def __init__(self, model: Model, X: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None,
                 l2: float | ArrayLike = 0.0) -> None:
        if not isinstance(model, Model):
            raise InvalidInputError(
                f"`model` must be a refsam model (LogisticRegression, SoftmaxRegression, MLP), "
                f"got {type(model).__name__}"
            )
        self.model = model
        X, self.y = model.check_data(X, y)
        self.X = X.copy()  # the problem owns its data: later edits of the caller's array cannot leak in
        if self.X.shape[0] == 0:
            raise InvalidInputError("`X` must have at least one row, got 0")
        self.n, self.p = self.X.shape
        self.d = model.n_params(self.p)
        self.design = model.design(self.X)  # what the model's derivatives read (x̃ for linear models), once
        self.l2: float | Array = self._check_l2(l2)
        self.weights = self.check_weights(weights)

    # -- validation and copies -------------------------------------------------------------------
    def check_weights(self, weights: ArrayLike | None, name: str = "weights") -> Array:
        """Validate a weight vector for this problem; None means all ones."""
        if weights is None:
            return np.ones(self.n)
        w = check_finite_array(name, weights, shape=(self.n,))
        if np.any(w < 0):
            raise InvalidInputError(f"`{name}` must be >= 0, got minimum {float(w.min())!r}")
        # a copy: problems and recorded runs must not alias the caller's array
        return np.array(w, dtype=np.float64)

    def _check_l2(self, l2: Any) -> float | Array:
        """λ as a float (one λ for every coordinate) or a float64 array (d,) of per-coordinate λ_i."""
        if np.ndim(l2) == 0:
            return check_nonnegative("l2", l2)
        vector = check_finite_array("l2", l2, shape=(self.d,)).copy()
        if np.any(vector < 0):
            raise InvalidInputError(f"`l2` entries must be >= 0, got minimum {float(vector.min())!r}")
        return cast("float | Array", vector)

    def l2_config(self) -> float | list[float]:
        """The loss-level λ as JSON: a float, or the list of λ_i."""
        lam = self.l2
        return [float(v) for v in lam] if isinstance(lam, np.ndarray) else float(lam)

    def check_theta(self, theta: ArrayLike, name: str = "theta") -> Array:
        """Validate a parameter vector for this problem: finite, shape (d,)."""
        return self.model.check_theta(theta, self.p, name=name)

    def check_test(self, X_test: ArrayLike, y_test: ArrayLike, name_X: str = "X_test",
                   name_y: str = "y_test") -> tuple[Array, NDArray[np.int64]]:
        """Validate test points for this problem: (m >= 1, p) features, labels valid for the model."""
        X_test, y_test = self.model.check_data(X_test, y_test, name_X, name_y)
        if X_test.shape[1] != self.p or X_test.shape[0] == 0:
            raise InvalidInputError(
                f"`{name_X}` must have shape (m >= 1, {self.p}) like the training data, got {X_test.shape}"
            )
        return X_test, y_test

    def with_weights(self, weights: ArrayLike | None) -> Problem:
        """The same problem with sample weights ``weights`` (e.g. w_j = 0 for leave-one-out).

        Shares X, y and the design with this problem (no O(n·d) copy: a problem never writes to them);
        only the weights are new."""
        other = copy.copy(self)
        other.weights = self.check_weights(weights)
        return other

    def init_params(self, seed: object = None) -> Array:
        """The model's seeded initial θ for this data, shape (d,)."""
        return self.model.init_params(self.p, seed)

    def data_fingerprint(self) -> str:
        """sha256 of (X, y): lets a saved trajectory check it is replayed on the same data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.X).data)  # the buffer itself: no O(n·d) copy to bytes
        h.update(np.ascontiguousarray(self.y.astype(np.int64, copy=False)).data)
        return h.hexdigest()

    # -- the objective and its derivatives -------------------------------------------------------
    def batch(self, idx: Index = None) -> tuple[Array, NDArray[np.int64], slice | NDArray[np.int64]]:
        """(X_B, y_B, selector): the rows of batch B; the full batch (None, or all of [n] in order) is
        served as X and y themselves, without a copy."""
        rows = self._rows(idx)
        if rows is None:
            return self.X, self.y, slice(None)
        return self.X[rows], self.y[rows], rows

    def _rows(self, idx: Index) -> NDArray[np.int64] | None:
        """The batch's indices, or None for the full batch (None, or all of [n] in order)."""
        if idx is None:
            return None
        rows = np.asarray(idx)
        if rows.shape == (self.n,) and rows[0] == 0 and rows[-1] == self.n - 1 and np.all(np.diff(rows) == 1):
            return None
        return rows

    def coefficients(self, idx: Index = None, weights: ArrayLike | None = None) -> tuple[Array, Any, Array]:
        """(design rows of B, y_B, c) with c_i = w_i/|B| for i ∈ B: what ``model.derivatives`` takes for
        F_{B,w}. The full batch is served without a copy."""
        w = self.weights if weights is None else np.asarray(weights)
        rows = self._rows(idx)
        if rows is None:  # the full batch: no copy
            return self.design, self.y, w / self.n
        return self.design[rows], self.y[rows], w[rows] / rows.shape[0]

    def at(self, theta: ArrayLike, idx: Index = None, weights: ArrayLike | None = None) -> BatchDerivatives:
        """The derivatives of F_{B,w} at θ (data term only): ``model.derivatives`` on the batch's rows of
        the design, c_i = w_i/|B|."""
        store = _REUSED.get()
        reusable = isinstance(theta, np.ndarray) and theta.ndim == 1 and self._rows(idx) is None
        if store is None or not reusable:
            design, y, c = self.coefficients(idx, weights)
            return self.model.derivatives(theta, design, y, c)
        theta = np.array(theta, dtype=np.float64)  # a copy: the stored object must not see later edits
        w = self.weights if weights is None else np.asarray(weights, dtype=np.float64)
        key = (id(self.design), theta.tobytes(), w.tobytes())
        if key not in store:
            design, y, c = self.coefficients(None, w)
            store[key] = (self.design, self.model.derivatives(theta, design, y, c))
            while len(store) > REUSED_POINTS:
                del store[next(iter(store))]  # the oldest point
        return store[key][1]

    def losses(self, theta: Any, idx: Index = None) -> Any:
        """Unweighted per-sample losses ℓ_i(θ) for i ∈ B, shape (|B|,). autograd-differentiable in θ."""
        X, y, _ = self.batch(idx)
        return self.model.losses(theta, X, y)

    def objective(self, theta: Any, idx: Index = None, weights: Any = None) -> Any:
        """F_{B,w}(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ). Written in autograd.numpy (differentiable in θ and w)."""
        w = self.weights if weights is None else weights
        X, y, rows = self.batch(idx)
        return anp.dot(w[rows] / X.shape[0], self.model.losses(theta, X, y))

    def regularizer(self, theta: Any) -> Any:
        """r(θ) = (λ/2)‖θ‖² with λ = ``l2`` (½ Σ_i λ_i θ_i² per coordinate). autograd-differentiable."""
        if isinstance(self.l2, np.ndarray):
            return 0.5 * anp.dot(self.l2 * theta, theta)
        return 0.5 * self.l2 * anp.dot(theta, theta)

    def per_sample_grads(self, theta: ArrayLike, idx: Index = None) -> Array:
        """Unweighted ∇ℓ_i(θ) for i ∈ B, shape (|B|, d)."""
        return self.at(theta, idx).per_sample_grads()

    def grad(self, theta: ArrayLike, idx: Index = None, weights: ArrayLike | None = None) -> Array:
        """∇F_{B,w}(θ), shape (d,). Data term only (no λθ).

        A block θ (d, K) with weights (n, K) (or None, or (n,) shared) gives the K runs' gradients as
        columns, (d, K) (`Model.column_grads()`): what block replays of many weight vectors use.
        """
        if np.ndim(theta) == 2:
            design, y, c = self.coefficients(idx, weights)
            theta = np.asarray(theta)
            if c.ndim == 1:
                c = np.broadcast_to(c[:, None], (c.shape[0], theta.shape[1]))
            return self.model.column_grads(theta, design, y, c)
        return self.at(theta, idx, weights).grad()

    def hessian(self, theta: ArrayLike, idx: Index = None, weights: ArrayLike | None = None) -> Array:
        """∇²F_{B,w}(θ), shape (d, d). Data term only (no λI). Cost: O(|B| d²) or d autograd passes."""
        return self.at(theta, idx, weights).hessian()

    def hvp(self, theta: ArrayLike, v: ArrayLike, idx: Index = None,
            weights: ArrayLike | None = None) -> Array:
        """∇²F_{B,w}(θ) v, shape (d,), without forming the Hessian. Data term only."""
        return self.at(theta, idx, weights).hvp(v)

    def __repr__(self) -> str:
        return (
            f"Problem({self.model!r}, n={self.n}, p={self.p}, d={self.d}, "
            f"l2={_decay_repr(self.l2)})"
        )


def check_problem(problem: object) -> Problem:
    """The one check that ``problem`` is a refsam.Problem (every public entry point calls it)."""
    if not isinstance(problem, Problem):
        raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    return problem


def decay_matrix(lam: float | Array, d: int) -> Array:
    """λ I, or diag(λ_i) for a per-coordinate λ: (d, d)."""
    return np.diag(np.broadcast_to(np.asarray(lam, dtype=np.float64), (d,)).copy())


def decay_times(lam: float | Array, V: Array) -> Array:
    """λ V row by row: λ_i V[i, …] for a per-coordinate λ (V (d,) or (d, k)), λ V otherwise."""
    if isinstance(lam, float) or V.ndim == 1:  # the scalar λ refsam stores is a Python float
        return lam * V
    return np.asarray(lam)[:, None] * V


def _decay_repr(lam: float | Array) -> str:
    if np.ndim(lam) == 0:
        return str(lam)
    arr = np.asarray(lam)
    return f"<per-coordinate: {int(np.count_nonzero(arr))} of {arr.size} in {arr.min():g}..{arr.max():g}>"
