"""The model protocol: a per-sample loss on a flat θ, and the one object that owns its derivatives.

Conventions
-----------
* ``theta`` is a flat float64 vector of length ``d = model.n_params(p)``; each model unpacks it.
* ``X`` has shape (n, p); ``y`` holds integer class labels, shape (n,).
* ``losses(theta, X, y)`` returns the per-sample losses ``ℓ_i(θ)``, shape (n,), written in
  ``autograd.numpy`` so autograd can differentiate it.
* ``model.at(theta, X, y, c)`` returns a `BatchDerivatives`: every derivative of the weighted
  batch loss ``Σ_i c_i ℓ_i(θ)`` at that one point (the objective layer passes ``c_i = w_i / |B|``;
  ``c=None`` means all ones). It is the single home of a model's derivatives: the objective, the SAM
  step, the fixed point, the closed form, the trajectory recursions and the benchmarks all call it.
  Blocks of directions are columns: ``V`` has shape (d, k).
* ``at`` is ``derivatives(theta, design(X), y, c)``: ``design(X)`` is the form of the data the
  model's derivatives read (X itself by default; x̃ = [X, 1] for the linear models), computed once per
  problem by `Problem`, which then calls ``derivatives`` on rows of it — so no step
  rebuilds it. A model with hand-written derivatives overrides ``derivatives`` (and, if it wants
  another form of the data, ``design``).

Bring your own model
--------------------
A subclass of `Model` that defines only ``losses`` (in ``autograd.numpy``), ``n_params`` and
``n_classes`` works with every method in refsam: the base class's ``at`` returns
`AutogradDerivatives`, which differentiates ``losses`` with autograd. It is slower than hand-written
derivatives (one backward pass per direction after one trace per point, and autograd's overhead per
operation in both) but exact, and it is also the oracle the tests hold the hand-written derivatives to.
A model that knows its derivatives overrides ``derivatives`` and returns its own
`BatchDerivatives` (as `LogisticRegression`, `SoftmaxRegression`
and `MLP` do); `refsam.kit.testing.check_grads()` checks it against autograd.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from typing import Any, NamedTuple

import autograd.numpy as anp
import numpy as np
import scipy.linalg
from autograd import grad as ag_grad
from autograd import hessian as ag_hessian
from autograd import jacobian as ag_jacobian
from autograd import make_vjp
from autograd.differential_operators import make_jvp_reversemode
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..tolerances import CANCEL_SCREEN_MARGIN, FD_GRAD_STEP
from ..validation import check_finite_array, check_nonnegative, check_random_state

__all__ = ["AutogradDerivatives", "BatchDerivatives", "LayerFactors", "Model", "as_columns",
           "check_label_smoothing", "cross_entropy", "gauss_newton_from_factors", "grad_norm_sum_screen",
           "smoothed_residual", "softmax", "weighted_gram"]

Array = NDArray[np.float64]

GRAD_NORM_PROBES = 4  # k, the random directions of `grad_norm_sum_screen` (k + 1 evaluations of the losses)


def cross_entropy(z: Any, y: Any, label_smoothing: float = 0.0) -> Any:
    """Softmax cross-entropy per sample, ℓ = logsumexp(z) − Σ_k q_k z_k with the smoothed target
    q = (1 − α) e_y + α/K (α = ``label_smoothing``; α = 0: ℓ = logsumexp(z) − z_y). Shifted by max z
    (stable). z (n, K) logits, y (n,) labels. autograd.numpy, so autograd differentiates it."""
    z_max = anp.max(z, axis=1, keepdims=True)
    log_norm = anp.log(anp.sum(anp.exp(z - z_max), axis=1)) + z_max[:, 0]
    z_y = anp.sum(z * (y[:, None] == anp.arange(z.shape[1])[None, :]), axis=1)
    if label_smoothing == 0.0:
        return log_norm - z_y
    return log_norm - (1.0 - label_smoothing) * z_y - label_smoothing * anp.mean(z, axis=1)


def smoothed_residual(pi: Array, y: Array, label_smoothing: float) -> Array:
    """∂ℓ/∂z = π − q for the smoothed softmax cross-entropy, q = (1 − α) e_y + α/K, shape (n, K)
    (or (n, K, runs) for a block of runs: the label picks along axes 0 and 1)."""
    residual = pi.copy()
    residual[np.arange(len(y)), y] -= 1.0 - label_smoothing
    if label_smoothing:
        residual -= label_smoothing / pi.shape[1]
    return np.asarray(residual, dtype=np.float64)


def check_label_smoothing(alpha: object) -> float:
    """α in [0, 1): the weight of the uniform target in label smoothing."""
    value = check_nonnegative("label_smoothing", alpha)
    if value >= 1.0:
        raise InvalidInputError(f"`label_smoothing` must lie in [0, 1), got {value}")
    return value


def softmax(z: Array) -> Array:
    """π = softmax(z) over the classes (axis 1), (n, K) -> (n, K); (n, K, runs) blocks too."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def weighted_gram(A: Array, w: Array) -> Array:
    """Aᵀ diag(w) A, (d, d), for rows A (n, d) and weights w (n,): a symmetric rank-n update (BLAS
    dsyrk on √w ⊙ A: half the flops of a GEMM) when w ≥ 0, a GEMM (symmetrised) otherwise. Exactly
    symmetric either way."""
    if np.all(w >= 0):
        B = np.sqrt(w)[:, None] * A  # C-ordered (n, d): Bᵀ is a Fortran-ordered (d, n) view, no copy
        upper = scipy.linalg.blas.dsyrk(1.0, B.T, trans=0)  # the upper triangle of BᵀB, (d, d)
        # (trans=1 on B made f2py copy B first: 23 vs 16 ms here)
        return np.asarray(upper + np.triu(upper, 1).T, dtype=np.float64)
    H = (A * w[:, None]).T @ A
    return np.asarray(0.5 * (H + H.T), dtype=np.float64)


class LayerFactors(NamedTuple):
    """One layer's share of the Gauss–Newton matrix, G_l = Σ_i c_i Σ_r (x̃_i ⊗ δ_ri)(x̃_i ⊗ δ_ri)ᵀ.

    ``inputs`` x̃ (n, in + 1): the layer's input with a trailing 1 (its bias); ``outputs`` δ (r, n, out):
    the columns of R_i, R_i R_iᵀ = ∂²ℓ_i/∂z², backpropagated to the layer's pre-activation. The layer's
    parameters are [W; b] (in + 1, out), stored row-major in θ, so its per-sample pseudo-gradients are
    x̃_i ⊗ δ_ri in θ's order and K-FAC's factors are A = Σ c x̃x̃ᵀ and S = Σ c Σ_r δδᵀ.
    """

    inputs: Array
    outputs: Array


def gauss_newton_from_factors(factors: list[LayerFactors], c: Array) -> Array:
    """G = Σ_i c_i Σ_r g_ri g_riᵀ, g_ri = concat_l (x̃_li ⊗ δ_lri): the Gauss–Newton matrix (d, d) from
    `BatchDerivatives.layer_factors()`, as rank updates on blocks of samples (``weighted_gram``)."""
    n = factors[0].inputs.shape[0]
    r = factors[0].outputs.shape[0]
    d = sum(f.inputs.shape[1] * f.outputs.shape[2] for f in factors)
    G = np.zeros((d, d))
    step = max(1, 4_000_000 // max(1, r * d))  # samples per block: the pseudo-gradients stay ≈ 32 MB
    for lo in range(0, n, step):
        rows = slice(lo, min(n, lo + step))
        m = rows.stop - rows.start
        blocks = [(f.inputs[rows][None, :, :, None] * f.outputs[:, rows, None, :]).reshape(r * m, -1)
                  for f in factors]  # g_ri per layer, (r·m, (in+1)·out)
        G += weighted_gram(np.concatenate(blocks, axis=1), np.tile(c[rows], r))
    return G


def as_columns(V: ArrayLike) -> tuple[Array, bool]:
    """(V as a (d, k) block, whether V was a single vector): products accept (d,) or (d, k)."""
    V = np.asarray(V, dtype=np.float64)
    return (V[:, None], True) if V.ndim == 1 else (V, False)


class BatchDerivatives:
    """Every derivative of the weighted batch loss L(x) = Σ_i c_i ℓ_i(x) at one point x.

        grad()              ∇L = Σ_i c_i ∇ℓ_i(x)                       (d,)
        hvp(V)              H V, H = Σ_i c_i ∇²ℓ_i(x)                   (d, k)   [(d,) for a vector]
        jvp(V)              per-sample directional derivatives ∇ℓ_iᵀ V  (n, k)   [unweighted]
        hvp_and_jvp(V)      both, sharing the forward pass               ((d, k), (n, k))
        per_sample_grads()  ∇ℓ_i(x) as rows                             (n, d)   [unweighted]
        hessian()           H                                           (d, d)
        losses()            ℓ_i(x)                                      (n,)

    Subclasses implement ``grad``, ``hvp_and_jvp``, ``per_sample_grads``, ``hessian`` and ``losses``;
    the others follow. ``c=None`` means c_i = 1.
    """

    def __init__(self, model: Model, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        """``X`` is the model's design (rows of ``model.design(X)``; the raw X for most models)."""
        self.model = model
        self.theta = np.asarray(theta, dtype=np.float64)
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y)
        self.c = np.ones(self.X.shape[0]) if c is None else np.asarray(c, dtype=np.float64)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.theta.shape[0])

    def losses(self) -> Array:
        """ℓ_i at this point. The default evaluates ``model.losses`` on X: models whose design is not X
        itself override it."""
        return np.asarray(self.model.losses(self.theta, self.X, self.y), dtype=np.float64)

    def grad(self) -> Array:
        raise NotImplementedError

    def per_sample_grads(self) -> Array:
        raise NotImplementedError

    def per_sample_grad_norms(self) -> Array:
        """‖∇ℓ_i‖₂ for every row, shape (n,). The default takes the norms of ``per_sample_grads``;
        the built-in models use ‖a ⊗ b‖ = ‖a‖ ‖b‖ and never form the (n, d) matrix."""
        G = self.per_sample_grads()
        return np.asarray(np.sqrt(np.einsum("ij,ij->i", G, G)), dtype=np.float64)

    def weighted_grad_norm_sum(self, below: float = np.inf) -> float:
        """Σ_i |c_i| ‖∇ℓ_i‖: the size of the terms ∇L sums (the cancellation check's denominator).

        ``below``: for a caller who only asks whether the sum is below this threshold. Where the exact
        sum is dear, an implementation may then return a cheap upper bound of it instead, if that bound
        is below ``below`` (`AutogradDerivatives`); otherwise, and by default, the exact sum."""
        return float(np.abs(self.c) @ self.per_sample_grad_norms())

    def hessian(self) -> Array:
        raise NotImplementedError

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        raise NotImplementedError

    def layer_factors(self) -> list[LayerFactors]:
        """The Gauss–Newton factors of each layer (`LayerFactors`), for the built-in models:
        what the Gauss–Newton, K-FAC and EK-FAC curvatures are built from."""
        raise NotImplementedError(f"{type(self.model).__name__} defines no layer factors: the Gauss–Newton, "
                                  f"K-FAC and EK-FAC curvatures need one of the built-in models")

    def gauss_newton(self) -> Array:
        """The Gauss–Newton matrix Σ_i c_i J_iᵀ (∂²ℓ_i/∂z²) J_i, J_i = ∂z_i/∂θ (z: the logits), (d, d).
        It equals the Hessian for the linear models (their logits are linear in θ)."""
        return gauss_newton_from_factors(self.layer_factors(), self.c)

    def hvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        HV = self.hvp_and_jvp(V)[0]
        return HV[:, 0] if single else HV

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = self.per_sample_grads() @ V  # (n, k)
        return JV[:, 0] if single else JV


def grad_norm_sum_screen(losses: Any, theta: Array, c: Array) -> float:
    """A cheap upper bound of Σ_i |c_i| ‖∇ℓ_i(θ)‖ for a model known only by its ``losses`` (θ ↦ ℓ, (n,)),
    that holds except with a tiny probability; k + 1 evaluations of ``losses``, no derivative:

        Σ_i |c_i| ‖∇ℓ_i‖ ≤ √(Σ_i |c_i|) · √S,  S = Σ_i |c_i| ‖∇ℓ_i‖² = E_v Σ_i |c_i| (∇ℓ_iᵀ v)²  (v ~ N(0, I))
        Ŝ = (1/k) Σ_m Σ_i |c_i| δ_mi²,  δ_m = (ℓ(θ + h_m v_m) − ℓ(θ)) / h_m ≈ J v_m            (k probes)
        bound = M · √(Σ_i |c_i|) · √Ŝ                                 (M = CANCEL_SCREEN_MARGIN)

    Ŝ = (1/k) Σ_m v_mᵀ A v_m with A = Jᵀ diag|c| J (trace S) falls below S/M² with probability
    P(χ²_k < k/M²) ≈ 2/M⁴ = 2e-8 (k = GRAD_NORM_PROBES = 4, M = 100) when the gradients span one
    direction (the least favourable case: spread over more directions, Ŝ concentrates further). The
    probes are seeded (the same for every call of a given d); h_m = FD_GRAD_STEP · max(1, ‖θ‖_∞)/‖v_m‖_∞,
    and by the mean-value theorem δ_mi is ∇ℓ_iᵀ v_m exactly at a point within FD_GRAD_STEP·max(1, ‖θ‖_∞)
    of θ (in each coordinate). A NaN or ∞ bound (an overflow at θ + h_m v_m) rules nothing out."""
    probes, inv_sizes = _screen_probes(theta.shape[0])  # (k, d), (k,)
    steps = FD_GRAD_STEP * max(1.0, float(np.max(np.abs(theta)))) * inv_sizes  # h_m, (k,)
    weights = np.abs(c)
    at_theta = np.asarray(losses(theta), dtype=np.float64)  # (n,)
    S_hat = 0.0
    for v, h in zip(probes, steps):
        delta = (np.asarray(losses(theta + h * v), dtype=np.float64) - at_theta) / h  # ≈ J v, (n,)
        S_hat += float(weights @ (delta * delta))
    return CANCEL_SCREEN_MARGIN * float(np.sqrt(weights.sum() * S_hat / GRAD_NORM_PROBES))


@lru_cache(maxsize=8)
def _screen_probes(d: int) -> tuple[Array, Array]:
    """The screen's k seeded Gaussian probes v_m as rows (k, d), and 1/‖v_m‖_∞ (k,)."""
    probes = check_random_state(0).standard_normal((GRAD_NORM_PROBES, d))
    return probes, 1.0 / np.max(np.abs(probes), axis=1)


class AutogradDerivatives(BatchDerivatives):
    """The derivatives of any `Model` by autograd from its ``losses`` alone.

    Independent of every hand derivation, hence the oracle the tests compare the built-in models with,
    and the default for user models. Every pass runs ``losses`` on the whole batch at once, so a pass
    costs one batched evaluation (J = ∂ℓ/∂θ, (n, d)):

        hvp(V), hvp_and_jvp(V)  reverse-of-reverse on φ(θ, u) = J(θ)ᵀ u, traced once per point at
                                (θ, c) (its value is ∇L): one backward pass of the trace per column v
                                gives ∂(vᵀφ)/∂θ = Σ_i c_i ∇²ℓ_i v = H v and ∂(vᵀφ)/∂u = J v together
        jvp(V)                  J V: the same trick on the losses alone (`make_jvp_reversemode`), one
                                cheaper trace per point, one backward pass per column
        per_sample_grads()      J: d JVP columns where d < n, else n VJP rows (`autograd.jacobian`)
        hessian()               d passes
        weighted_grad_norm_sum  Σ_i |c_i| ‖∇ℓ_i‖, with a cheap screen when the caller only asks whether it
                                is below a threshold (`grad_norm_sum_screen`)

    The traces are kept on the object (one per point and batch, as the built-ins keep theirs). What a
    step costs, measured: benchmarks/README.md (user-model rows).
    """

    def __init__(self, model: Model, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        # the traces below freeze θ and c: own copies, so an in-place edit of the caller's arrays cannot
        # leave this object answering at two points (X, the batch's design, is kept by reference)
        self.theta, self.c = self.theta.copy(), self.c.copy()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for process pools): the traces are closures and are rebuilt on demand."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_losses_jvp", "_second_order")}

    def _losses_of(self, t: Any) -> Any:
        return self.model.losses(t, self.X, self.y)

    def _batch_loss(self, t: Any) -> Any:
        return anp.dot(self.c, self._losses_of(t))

    def _losses_vjp(self, theta_u: Any) -> Any:
        """φ(θ, u) = J(θ)ᵀ u = ∇_θ (uᵀ ℓ(θ)), (d,): one reverse pass of the losses, itself traced."""
        theta, u = theta_u
        return make_vjp(self._losses_of)(theta)[0](u)

    @cached_property
    def _losses_jvp(self) -> Any:
        """v ↦ J v at this point (the losses' Jacobian), traced once."""
        return make_jvp_reversemode(self._losses_of)(self.theta)

    @cached_property
    def _second_order(self) -> tuple[Any, Any]:
        """(v ↦ (H v, J v), ∇L) at this point: the backward pass of φ's trace at (θ, c), and φ's value."""
        backward, value = make_vjp(self._losses_vjp)((self.theta, self.c))
        return backward, value

    def jvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        JV = np.zeros((self.n, V.shape[1]))
        if self.n:
            for col in range(V.shape[1]):
                JV[:, col] = self._losses_jvp(V[:, col])
        return JV[:, 0] if single else JV

    def grad(self) -> Array:
        if self.n == 0:
            return np.zeros(self.d)
        if "_second_order" in self.__dict__:  # φ(θ, c) = ∇L, already computed by the trace
            return np.asarray(self._second_order[1], dtype=np.float64)
        return np.asarray(ag_grad(self._batch_loss)(self.theta), dtype=np.float64)

    def per_sample_grads(self) -> Array:
        if self.n == 0:
            return np.zeros((0, self.d))
        if self.d < self.n:  # d JVP columns, each one backward pass, instead of n VJP rows
            return self.jvp(np.eye(self.d))
        return np.asarray(ag_jacobian(self._losses_of)(self.theta), dtype=np.float64).reshape(self.n, self.d)

    def weighted_grad_norm_sum(self, below: float = np.inf) -> float:
        """Σ_i |c_i| ‖∇ℓ_i‖; for a finite ``below``, the screen's bound instead where it is below it
        (`grad_norm_sum_screen`: GRAD_NORM_PROBES + 1 evaluations of ``losses``, against the d or n
        backward passes of the exact sum)."""
        if np.isfinite(below) and min(self.n, self.d) > GRAD_NORM_PROBES:
            bound = grad_norm_sum_screen(self._losses_of, self.theta, self.c)
            if bound < below:  # (False for a NaN bound: the exact sum decides)
                return bound
        return super().weighted_grad_norm_sum()

    def hessian(self) -> Array:
        if self.n == 0:
            return np.zeros((self.d, self.d))
        return np.asarray(ag_hessian(self._batch_loss)(self.theta), dtype=np.float64)

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        V, _ = as_columns(V)
        HV, JV = np.zeros_like(V), np.zeros((self.n, V.shape[1]))
        if self.n:
            backward = self._second_order[0]
            for col in range(V.shape[1]):
                HV[:, col], JV[:, col] = backward(V[:, col])  # (∂(vᵀφ)/∂θ, ∂(vᵀφ)/∂u)
        return HV, JV

    def hvp(self, V: ArrayLike) -> Array:
        V, single = as_columns(V)
        HV = self.hvp_and_jvp(V)[0]
        return HV[:, 0] if single else HV


class Model:
    """Base class: a per-sample loss ``losses(theta, X, y)`` on a flat parameter vector.

    Subclasses define ``losses`` (autograd.numpy), ``n_params`` and ``n_classes``; they may override
    ``at`` to supply hand-written derivatives. Every derivative method below is ``self.at(...)``'s.
    """

    name = "model"
    convex = False  # True if every per-sample loss is convex in θ (a user model may say so)

    # -- structure -----------------------------------------------------------------------------
    def n_params(self, n_features: int) -> int:
        """d, the length of θ for data with ``n_features`` columns."""
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        """K, the number of classes the labels may take (0..K−1)."""
        raise NotImplementedError

    def init_params(self, n_features: int, seed: object = None) -> Array:
        """A seeded initial θ (small Gaussian entries), shape (d,)."""
        rng = check_random_state(seed)
        return 0.01 * rng.standard_normal(self.n_params(n_features))

    def spec(self) -> dict[str, Any]:
        """A JSON-able description from which `model_from_spec()` rebuilds this model."""
        return {"name": self.name}

    def bias_mask(self, n_features: int) -> NDArray[np.bool_]:
        """True at the coordinates of θ that are biases, shape (d,): none for a generic model. Used to
        exclude biases from weight decay or from ASAM's scaling, as most training recipes do."""
        return np.zeros(self.n_params(n_features), dtype=bool)

    def check_data(self, X: ArrayLike, y: ArrayLike, name_X: str = "X",
                   name_y: str = "y") -> tuple[Array, NDArray[np.int64]]:
        """Validate (X, y) for this model; returns (float64 X of shape (n, p), int64 y of shape (n,))."""
        X = check_finite_array(name_X, X, ndim=2)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or y_arr.shape[0] != X.shape[0]:
            raise InvalidInputError(
                f"`{name_y}` must have shape ({X.shape[0]},) to match `{name_X}`, got {y_arr.shape}"
            )
        y_float = check_finite_array(name_y, y_arr, ndim=1)
        if np.any(y_float != np.round(y_float)):
            raise InvalidInputError(f"`{name_y}` must hold integer class labels, got non-integer values")
        n_classes = self.n_classes
        if y_float.size and (y_float.min() < 0 or y_float.max() >= n_classes):  # before any int cast
            raise InvalidInputError(
                f"`{name_y}` labels must lie in 0..{n_classes - 1} for {self.name}, "
                f"got values in {y_float.min():.6g}..{y_float.max():.6g}"
            )
        return X, y_float.astype(np.int64)

    def check_theta(self, theta: ArrayLike, n_features: int, name: str = "theta") -> Array:
        """Validate a parameter vector for data with ``n_features`` columns."""
        return check_finite_array(name, theta, shape=(self.n_params(n_features),))

    # -- loss and derivatives ------------------------------------------------------------------
    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        """Per-sample losses ℓ_i(θ), shape (n,). Written in autograd.numpy."""
        raise NotImplementedError

    def design(self, X: ArrayLike) -> Array:
        """The form of the data X (n, p) that `derivatives()` reads; default: X itself."""
        return np.asarray(X, dtype=np.float64)

    def derivatives(self, theta: ArrayLike, design: ArrayLike, y: ArrayLike,
                    c: ArrayLike | None = None) -> BatchDerivatives:
        """The derivatives of Σ_i c_i ℓ_i at ``theta`` on rows of `design()`; default: autograd.

        A model that overrides `design()` must override this too (autograd needs the raw X).
        """
        return AutogradDerivatives(self, theta, design, y, c)

    def column_grads(self, theta: Array, design: Array, y: Array, c: Array) -> Array:
        """∇_θ Σ_i c_{ik} ℓ_i(θ_k) for every column k of θ (d, K) and c (n, K): the gradients of K
        runs advanced together (block replays), (d, K). Default: one `derivatives()` per column;
        the linear models override it with two matrix products for all columns."""
        return np.column_stack([self.derivatives(theta[:, k], design, y, c[:, k]).grad()
                                for k in range(theta.shape[1])])

    def at(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
           c: ArrayLike | None = None) -> BatchDerivatives:
        """The derivatives of Σ_i c_i ℓ_i at ``theta`` for data (X, y) (`BatchDerivatives`)."""
        return self.derivatives(theta, self.design(X), y, c)

    def per_sample_grads(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike) -> Array:
        """∇ℓ_i(θ) for every sample, shape (n, d)."""
        return self.at(theta, X, y).per_sample_grads()

    def grad(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike, c: ArrayLike) -> Array:
        """Σ_i c_i ∇ℓ_i(θ), shape (d,)."""
        return self.at(theta, X, y, c).grad()

    def hessian(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike, c: ArrayLike) -> Array:
        """Σ_i c_i ∇²ℓ_i(θ), shape (d, d)."""
        return self.at(theta, X, y, c).hessian()

    def hvp(self, theta: ArrayLike, X: ArrayLike, y: ArrayLike, c: ArrayLike, v: ArrayLike) -> Array:
        """(Σ_i c_i ∇²ℓ_i(θ)) v, shape (d,) (or (d, k) for a block v), without forming the Hessian."""
        return self.at(theta, X, y, c).hvp(v)

    def logits(self, theta: Any, X: Any) -> Any:
        """Model outputs before the final link, shape (n,) for logistic, (n, K) otherwise."""
        raise NotImplementedError

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        """Class probabilities, shape (n, K)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({args})"
