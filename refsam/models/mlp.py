"""The MLP: forward pass, backpropagation, the one R-operator, and the layer-wise exact Hessian.

Conventions
-----------
* ``sizes = (p, h_1, …, h_L, K)``; layer l (0-based) maps a ↦ a W_l + b_l, W_l (sizes[l], sizes[l+1]);
  θ concatenates W_0.ravel(), b_0, W_1.ravel(), b_1, … Hidden layers apply a smooth activation f;
  the last layer's output is the logits z; ℓ = logsumexp(z) − z_y.
* Names in the equations: pre_l = a_{l−1} W_l + b_l, a_l = f(pre_l) (a_{−1} = X), z = pre_{L−1},
  π = softmax(z), δ_l = ∂ℓ/∂pre_l (backpropagated), and a dot for a directional derivative (a tangent).
* Every second derivative goes through `MLPDerivatives.tangents()`, the one place where the
  tangent (R-operator) equations are written: the Hessian-vector product starts it at the input with a
  parameter direction; the layer-wise Hessian starts it at a pre-activation unit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import autograd.numpy as anp
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from ..errors import InvalidInputError
from ..validation import check_choice, check_positive_int, check_random_state
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
)
from .linear import output_hessian_root

__all__ = ["ACTIVATIONS", "MLP", "MLPDerivatives"]

ACTIVATIONS = ("sigmoid", "softplus", "tanh")  # smooth: the methods need second derivatives (no ReLU)

# Tangent passes and Hessian assembly hold about this many floats at a time (≈ 32 MB) besides their
# results; blocks of directions, units and samples are sized from it.
BLOCK_FLOATS = 4_000_000


def activation(name: str, pre: Any) -> Any:
    """f(pre) in autograd.numpy (the loss the autograd oracle differentiates)."""
    if name == "tanh":
        return anp.tanh(pre)
    if name == "softplus":
        return anp.logaddexp(0.0, pre)
    return 0.5 * (anp.tanh(0.5 * pre) + 1.0)  # sigmoid, written through tanh: no overflow


def activation_with_derivatives(name: str, pre: Array) -> tuple[Array, Array, Array]:
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


class MLP(Model):
    """Fully connected network with smooth activations and a softmax cross-entropy output.

    ``sizes = (p, h_1, …, h_L, K)``: input width, hidden widths, number of classes (K ≥ 2).
    Layer l maps a ↦ a W_l + b_l with W_l of shape (sizes[l], sizes[l+1]); θ concatenates
    W_1.ravel(), b_1, W_2.ravel(), b_2, … in that order. Hidden layers apply ``activation``
    (tanh, softplus or sigmoid — ReLU is excluded: the methods need second derivatives).
    ℓ(θ) = logsumexp(z) − z_y on the final logits z; with ``label_smoothing`` α > 0,
    ℓ = logsumexp(z) − qᵀz with q = (1 − α) e_y + α/K (so δ at the output is π − q).
    """

    name = "mlp"

    def __init__(self, sizes: Any, activation: str = "tanh", label_smoothing: float = 0.0) -> None:
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise InvalidInputError(
                f"`sizes` must be a sequence of ints (n_features, hidden..., n_classes), got {sizes!r}"
            ) from None
        if len(sizes) < 2:
            raise InvalidInputError(f"`sizes` must list at least (n_features, n_classes), got {sizes!r}")
        for s in sizes:
            check_positive_int("sizes entries", s)
        if sizes[-1] < 2:
            raise InvalidInputError(f"`sizes[-1]` (number of classes) must be >= 2, got {sizes[-1]}")
        self.sizes: tuple[int, ...] = tuple(int(s) for s in sizes)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.label_smoothing = check_label_smoothing(label_smoothing)

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    def spec(self) -> dict[str, Any]:
        smoothing = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        return {"name": self.name, "sizes": list(self.sizes), "activation": self.activation, **smoothing}

    def bias_mask(self, n_features: int) -> NDArray[np.bool_]:
        mask = np.zeros(self.n_params(n_features), dtype=bool)
        for l, (start, stop) in enumerate(self.layer_slices()):
            mask[start + self.sizes[l] * self.sizes[l + 1]:stop] = True  # b_l follows W_l
        return mask

    def n_params(self, n_features: int) -> int:
        if n_features != self.sizes[0]:
            raise InvalidInputError(
                f"MLP input width sizes[0]={self.sizes[0]} does not match the data's "
                f"n_features={n_features}; build MLP(({n_features}, ...))"
            )
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def init_params(self, n_features: int, seed: object = None) -> Array:
        """Glorot-style init: W_l ~ N(0, 1/fan_in), b_l = 0."""
        rng = check_random_state(seed)
        self.n_params(n_features)  # validates the width
        parts = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(rng.standard_normal(fan_in * fan_out) / np.sqrt(fan_in))
            parts.append(np.zeros(fan_out))
        return np.concatenate(parts)

    def layer_slices(self) -> list[tuple[int, int]]:
        """[(start, stop)] of each layer's parameters W̃_l = (W_l, b_l) in θ."""
        slices, start = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            slices.append((start, start + (fan_in + 1) * fan_out))
            start += (fan_in + 1) * fan_out
        return slices

    def unpack(self, theta: Any) -> list[tuple[Any, Any]]:
        """[(W_l, b_l)]: W_l (sizes[l], sizes[l+1]), b_l (sizes[l+1],). Works on autograd boxes."""
        layers = []
        for l, (start, stop) in enumerate(self.layer_slices()):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            W = anp.reshape(theta[start:start + fan_in * fan_out], (fan_in, fan_out))
            layers.append((W, theta[start + fan_in * fan_out:stop]))
        return layers

    def unpack_directions(self, V: Array) -> list[tuple[Array, Array]]:
        """Rows of V (k, d) split like θ: [(V_l (k, in, out), v_l (k, out))] per layer."""
        k, parts = V.shape[0], []
        for l, (start, stop) in enumerate(self.layer_slices()):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            parts.append((V[:, start:start + fan_in * fan_out].reshape(k, fan_in, fan_out),
                          V[:, start + fan_in * fan_out:stop]))
        return parts

    def logits(self, theta: Any, X: Any) -> Any:
        layers = self.unpack(theta)
        a = X
        for W, b in layers[:-1]:
            a = activation(self.activation, anp.dot(a, W) + b)
        W, b = layers[-1]
        return anp.dot(a, W) + b  # (n, K)

    def losses(self, theta: Any, X: Any, y: Any) -> Any:
        return cross_entropy(self.logits(theta, X), y, self.label_smoothing)  # (n,)

    def predict_proba(self, theta: ArrayLike, X: ArrayLike) -> Array:
        return softmax(self.logits(np.asarray(theta, dtype=np.float64), np.asarray(X, dtype=np.float64)))

    def derivatives(self, theta: ArrayLike, design: ArrayLike, y: ArrayLike,
                    c: ArrayLike | None = None) -> MLPDerivatives:
        return MLPDerivatives(self, theta, design, y, c)


class Primal(NamedTuple):
    """One forward and backward pass, kept for every derivative at this point: per layer l (0-based)
    W_l, its input a_{l−1}, the hidden slopes f'(pre_l) and curvatures f''(pre_l), the backpropagated
    δ_l, and π = softmax(z)."""

    layers: list[tuple[Array, Array]]
    inputs: list[Array]
    slopes: list[Array]
    curvatures: list[Array]
    deltas: list[Array]
    pi: Array


class MLPDerivatives(BatchDerivatives):
    """The MLP at one θ: one forward/backward pass (`primal`) shared by every derivative.

        forward   pre_l = a_{l−1} W_l + b_l,  a_l = f(pre_l) (hidden l),  z = pre_{L−1},  π = softmax(z)
        backward  δ_{L−1} = π − e_y,  δ_{l−1} = (δ_l W_lᵀ) ⊙ f'(pre_{l−1})
        gradient  ∇_{W_l} L = a_{l−1}ᵀ C δ_l,  ∇_{b_l} L = δ_lᵀ c,   C = diag(c)
    """

    def __init__(self, model: MLP, theta: ArrayLike, X: ArrayLike, y: ArrayLike,
                 c: ArrayLike | None = None) -> None:
        super().__init__(model, theta, X, y, c)
        self.mlp = model
        self.primal = self._primal()

    def _primal(self) -> Primal:
        model = self.mlp
        layers = model.unpack(self.theta)
        inputs, slopes, curvatures = [self.X], [], []
        for W, b in layers[:-1]:
            a, slope, curvature = activation_with_derivatives(model.activation, inputs[-1] @ W + b)
            inputs.append(a)
            slopes.append(slope)
            curvatures.append(curvature)
        W, b = layers[-1]
        pi = softmax(inputs[-1] @ W + b)  # (n, K)
        delta = smoothed_residual(pi, self.y, model.label_smoothing)  # π − q (q = e_y without smoothing)
        deltas = [delta]
        for l in range(len(layers) - 1, 0, -1):
            deltas.insert(0, (deltas[0] @ layers[l][0].T) * slopes[l - 1])
        return Primal(layers, inputs, slopes, curvatures, deltas, pi)

    # -- first derivatives -------------------------------------------------------------------------
    def grad(self) -> Array:
        parts = []
        for a, delta in zip(self.primal.inputs, self.primal.deltas):
            parts.append((a.T @ (self.c[:, None] * delta)).ravel())  # a_{l−1}ᵀ C δ_l
            parts.append(self.c @ delta)  # δ_lᵀ c
        return np.concatenate(parts)

    def per_sample_grads(self) -> Array:
        out = np.empty((self.n, self.d))
        for (start, stop), a, delta in zip(self.mlp.layer_slices(), self.primal.inputs, self.primal.deltas):
            block = out[:, start:stop].reshape(self.n, a.shape[1] + 1, delta.shape[1])  # a view
            np.multiply(a[:, :, None], delta[:, None, :], out=block[:, :-1])  # a_{l−1,i} δ_{l,i}ᵀ
            block[:, -1] = delta  # the bias row
        return out

    def per_sample_grad_norms(self) -> Array:
        squares = np.zeros(self.n)
        for a, delta in zip(self.primal.inputs, self.primal.deltas):  # ‖[a; 1] ⊗ δ‖² per layer
            squares += (np.einsum("ij,ij->i", a, a) + 1.0) * np.einsum("ij,ij->i", delta, delta)
        return np.sqrt(squares)

    # -- the tangent (R-operator) equations, written once --------------------------------------------
    def tangents(self, m: int, pre_dot: Array, directions: list[tuple[Array, Array]] | None = None,
                 backward: bool = True) -> tuple[list[Array], list[Array]]:
        """Tangents of the passes above layer m, from ṗre_m = ``pre_dot`` (k, n, out_m).

        With parameter directions (V_l, v_l) (``directions``; zero when None) for the layers above m:
            forward,  l > m:  ȧ_{l−1} = f'(pre_{l−1}) ⊙ ṗre_{l−1},  ṗre_l = ȧ_{l−1} W_l + a_{l−1} V_l + v_l
            output:           δ̇_{L−1} = π ⊙ ż − π (πᵀż)                      (ż = ṗre_{L−1})
            backward, l > m:  δ̇_{l−1} = (δ̇_l W_lᵀ + δ_l V_lᵀ) ⊙ f'(pre_{l−1})
                                        + (δ_l W_lᵀ) ⊙ f''(pre_{l−1}) ⊙ ṗre_{l−1}
        Returns ([ṗre_l], [δ̇_l]) for l = m … L−1, arrays of shape (k, n, sizes[l+1]); with
        ``backward=False`` only the forward half runs and [δ̇_l] is empty.
        """
        p, L = self.primal, len(self.primal.layers)
        k, n = pre_dot.shape[0], self.n
        pre_dots = [pre_dot]
        for l in range(m + 1, L):
            a_dot = p.slopes[l - 1] * pre_dots[-1]  # ȧ_{l−1}
            nxt = (a_dot.reshape(k * n, -1) @ p.layers[l][0]).reshape(k, n, -1)
            if directions is not None:
                V_l, v_l = directions[l]
                nxt += np.matmul(p.inputs[l], V_l) + v_l[:, None, :]  # + a_{l−1} V_l + v_l
            pre_dots.append(nxt)
        if not backward:
            return pre_dots, []
        z_dot = pre_dots[-1]
        delta_dot = p.pi * z_dot - p.pi * np.sum(p.pi * z_dot, axis=2, keepdims=True)
        delta_dots = [delta_dot]
        for l in range(L - 1, m, -1):
            W = p.layers[l][0]
            back = p.deltas[l] @ W.T  # δ_l W_lᵀ, (n, in)
            delta_dot = (delta_dot.reshape(k * n, -1) @ W.T).reshape(k, n, -1)
            if directions is not None:
                delta_dot += np.matmul(p.deltas[l], directions[l][0].transpose(0, 2, 1))  # + δ_l V_lᵀ
            delta_dot *= p.slopes[l - 1]
            delta_dot += (back * p.curvatures[l - 1]) * pre_dots[l - 1 - m]
            delta_dots.insert(0, delta_dot)
        return pre_dots, delta_dots

    # -- Hessian-vector products: Pearlmutter's R-operator ----------------------------------------------
    def _column_blocks(self, V: Array) -> list[Array]:
        """Split V's columns so one tangent pass holds at most BLOCK_FLOATS floats per layer."""
        width = max(1, BLOCK_FLOATS // max(1, self.n * max(self.mlp.sizes)))
        return [V[:, lo:lo + width] for lo in range(0, V.shape[1], width)]

    def hvp_and_jvp(self, V: ArrayLike) -> tuple[Array, Array]:
        """(H V, per-sample ∇ℓ_iᵀ V) for the columns of V (d, k): the R-operator along each column.

        Starting from ṗre_0 = X V_0 + v_0 (`tangents()` with every layer's direction):
            (H v)_{W_l} = ȧ_{l−1}ᵀ C δ_l + a_{l−1}ᵀ C δ̇_l,   (H v)_{b_l} = δ̇_lᵀ c
            ∇ℓ_iᵀ v = δ_{L−1,i}ᵀ ż_i   (the forward tangent computes it anyway)
        Cost about three gradients per column; exact (tested against autograd to round-off).
        """
        V, _ = as_columns(V)
        if self.n == 0:
            return np.zeros_like(V), np.zeros((0, V.shape[1]))
        blocks = [self._hvp_and_jvp_block(block) for block in self._column_blocks(V)]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate([b[0] for b in blocks], axis=1), np.concatenate([b[1] for b in blocks], axis=1)

    def _hvp_and_jvp_block(self, V: Array) -> tuple[Array, Array]:
        p, c, k = self.primal, self.c, V.shape[1]
        directions = self.mlp.unpack_directions(np.ascontiguousarray(V.T))
        V_0, v_0 = directions[0]
        pre_dots, delta_dots = self.tangents(0, np.matmul(self.X, V_0) + v_0[:, None, :], directions)
        jvp = np.sum(p.deltas[-1] * pre_dots[-1], axis=2).T  # δ_{L−1}ᵀ ż, (n, k)
        out = []
        for l, delta_dot in enumerate(delta_dots):
            hv_W = np.matmul(p.inputs[l].T, c[:, None] * delta_dot)  # a_{l−1}ᵀ C δ̇_l, (k, in, out)
            if l > 0:
                a_dot = p.slopes[l - 1] * pre_dots[l - 1]  # ȧ_{l−1}, (k, n, in)
                hv_W += np.matmul(a_dot.transpose(0, 2, 1), c[:, None] * p.deltas[l])
            out += [hv_W.reshape(k, -1), c @ delta_dot]  # (H v)_{W_l}, (H v)_{b_l}
        return np.concatenate(out, axis=1).T, jvp  # (d, k), (n, k)

    def jvp(self, V: ArrayLike) -> Array:
        """∇ℓ_iᵀ v = δ_{L−1,i}ᵀ ż_i: the forward tangent only, (n, k)."""
        V, single = as_columns(V)
        parts = [np.zeros((self.n, 0))]
        for block in self._column_blocks(V):
            directions = self.mlp.unpack_directions(np.ascontiguousarray(block.T))
            V_0, v_0 = directions[0]
            pre_dots, _ = self.tangents(0, np.matmul(self.X, V_0) + v_0[:, None, :], directions,
                                        backward=False)
            parts.append(np.sum(self.primal.deltas[-1] * pre_dots[-1], axis=2).T)
        JV = np.concatenate(parts, axis=1)
        return JV[:, 0] if single else JV

    # -- the Gauss–Newton factors -------------------------------------------------------------------
    def layer_factors(self) -> list[LayerFactors]:
        """Per layer: x̃_l = [a_{l−1}, 1] and the columns of R_i (R_i R_iᵀ = ∂²ℓ_i/∂z²,
        `output_hessian_root()`) backpropagated like δ:
        Δ_{L−1} = R,  Δ_{l−1} = (Δ_l W_lᵀ) ⊙ f'(pre_{l−1})."""
        p, L = self.primal, len(self.primal.layers)
        K = p.pi.shape[1]
        outputs = [output_hessian_root(p.pi)]  # (K, n, K)
        for l in range(L - 1, 0, -1):
            back = (outputs[0].reshape(K * self.n, -1) @ p.layers[l][0].T).reshape(K, self.n, -1)
            outputs.insert(0, back * p.slopes[l - 1])
        factors = []
        for a, out in zip(p.inputs, outputs):
            x_aug = np.empty((self.n, a.shape[1] + 1))
            x_aug[:, :-1], x_aug[:, -1] = a, 1.0
            factors.append(LayerFactors(x_aug, out))
        return factors

    # -- the exact Hessian, layer by layer ---------------------------------------------------------------
    def hessian(self) -> Array:
        """Σ_i c_i ∇²ℓ_i(θ), shape (d, d): exact, assembled layer by layer from pre-activation tangents.

        Write W̃_m = [W_m; b_m], shape (in_m + 1, out_m) — θ stores exactly W̃_m.ravel() — and
        x̃_m = [a_{m−1}, 1], so pre_m = x̃_m W̃_m. For every layer l ≥ m the per-sample gradient
        ∇_{W̃_l} ℓ_i = x̃_{l,i} δ_{l,i}ᵀ depends on W̃_m only through pre_{m,i}; by the chain rule
            ∂²ℓ_i / ∂W̃_m[a, b] ∂W̃_l = x̃_{m,ia} R^{(m,b)}_{l,i},
            R^{(m,b)}_{l,i} = ∂(x̃_{l,i} δ_{l,i}ᵀ) / ∂pre_{m,ib} = ẋ̃_{l,i} δ_{l,i}ᵀ + x̃_{l,i} δ̇_{l,i}ᵀ,
        with ẋ̃_l = [ȧ_{l−1}, 0] and δ̇_l the tangents of `tangents()` started from ṗre_m = e_b. So
        the rows (m, ·, b) of H, in the columns of layers ≥ m, are one matrix product
            H[(m, :, b), layers ≥ m] = (C x̃_m)ᵀ R^{(m,b)},   (in_m+1, n) @ (n, d_{≥m}),
        and the columns of layers < m follow by symmetry. Cost: Σ_m out_m such products, O(n d²)
        flops in all — about one multiply-add per sample and entry of the upper block triangle.
        """
        n, d = self.n, self.d
        if n == 0:
            return np.zeros((d, d))  # an empty sum
        max_samples = max(1, BLOCK_FLOATS // d)  # bounds the (samples, d) buffer R below
        if n > max_samples:  # H is a sum over samples: assemble it chunk by chunk
            H = np.zeros((d, d))
            for lo in range(0, n, max_samples):
                part = slice(lo, lo + max_samples)
                H += MLPDerivatives(self.mlp, self.theta, self.X[part], self.y[part], self.c[part]).hessian()
            return H
        p, sizes = self.primal, self.mlp.sizes
        H = np.empty((d, d))
        units_per_block = max(1, BLOCK_FLOATS // (n * max(sizes) * len(sizes)))
        for m, (start, stop) in enumerate(self.mlp.layer_slices()):
            x_aug = np.empty((n, sizes[m] + 1))
            x_aug[:, :-1], x_aug[:, -1] = p.inputs[m], 1.0  # x̃_m
            cx_T = (self.c[:, None] * x_aug).T  # (C x̃_m)ᵀ, (in_m + 1, n)
            out_m = sizes[m + 1]
            # rows (m, a, b) as [a, b, :]; a view (splitting the strided row axis never copies)
            rows_of_m = H[start:stop, start:].reshape(x_aug.shape[1], out_m, d - start)
            R = np.empty((n, d - start))  # R^{(m,b)}, one row per sample
            for lo in range(0, out_m, units_per_block):
                units = np.arange(lo, min(out_m, lo + units_per_block))
                pre_dot = np.zeros((len(units), n, out_m))
                pre_dot[np.arange(len(units)), :, units] = 1.0  # ṗre_m = e_b
                pre_dots, delta_dots = self.tangents(m, pre_dot)
                for r, b in enumerate(units):
                    self._fill_gradient_tangent(m, pre_dots, delta_dots, r, R)
                    rows_of_m[:, b, :] = cx_T @ R  # H[(m, :, b), layers ≥ m]
            diagonal_block = H[start:stop, start:stop]
            diagonal_block[...] = 0.5 * (diagonal_block + diagonal_block.T)  # averages round-off only
            H[stop:, start:stop] = H[start:stop, stop:].T  # columns of layer m below it, by symmetry
        return H

    def _fill_gradient_tangent(self, m: int, pre_dots: list[Array], delta_dots: list[Array], r: int,
                               R: Array) -> None:
        """Write R^{(m,b)} (see `hessian()`) for tangent row r into R (n, d_{≥m}), layer by layer:
        R_l = ẋ̃_l δ_lᵀ + x̃_l δ̇_lᵀ per sample, laid out like W̃_l.ravel()."""
        p, sizes, offset = self.primal, self.mlp.sizes, 0
        for l in range(m, len(sizes) - 1):
            fan_in, fan_out = sizes[l] + 1, sizes[l + 1]
            R_l = R[:, offset:offset + fan_in * fan_out].reshape(self.n, fan_in, fan_out)  # a view
            delta_dot = delta_dots[l - m][r]
            np.multiply(p.inputs[l][:, :, None], delta_dot[:, None, :], out=R_l[:, :-1])
            R_l[:, -1] = delta_dot  # the bias row: x̃ = 1
            if l > m:  # ẋ̃_l = [ȧ_{l−1}, 0]; ẋ̃_m = 0
                a_dot = p.slopes[l - 1] * pre_dots[l - 1 - m][r]
                R_l[:, :-1] += a_dot[:, :, None] * p.deltas[l][:, None, :]
            offset += fan_in * fan_out
