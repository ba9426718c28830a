"""One SAM step and the descent direction G it follows: the same equation for training and fixed points.

With λ_in, λ_out from :meth:`~refsam.Problem.weight_decay_split` (λ_in = λ in coupled mode, λ_out = λ
in decoupled mode, the other 0), on batch B with sample weights w:

    g  = ∇F_{B,w}(θ) + λ_in θ                    the gradient the perturbation is built from
    ε  = ε(θ; g)                                 the SAM rule (refsam.sam)
    ŵ  = θ + ε                                   the perturbed point
    G  = ∇F_{B,w}(ŵ) + λ_in ŵ + λ_out θ          the descent direction
    θ' = θ − η G                                 one SAM step

decoupled:  g = ∇F(θ),        G = ∇F(ŵ) + λθ       (PyTorch SAM + SGD(weight_decay=λ))
coupled:    g = ∇F(θ) + λθ,   G = ∇F(ŵ) + λŵ       (r(θ) = (λ/2)‖θ‖² is part of the loss everywhere)

With m-sharpness (``SAM(..., m_sharpness=m)``) the batch is cut into consecutive chunks C of m samples
(the last may be smaller), each with its own perturbation, and the direction averages them:

    g_C = ∇F_{C,w}(θ) + λ_in θ,   ŵ_C = θ + ε(θ; g_C),
    G = Σ_C (|C|/|B|) [∇F_{C,w}(ŵ_C) + λ_in ŵ_C] + λ_out θ

(one chunk: the equations above). The recorded ε_t is then the size-weighted mean of the ε_C.

On the full batch, G(θ; w) is the residual whose roots are the SAM fixed points
(:mod:`refsam.influence.fixed_point`). ρ = 0 gives ε = 0 exactly, so the step is exactly (S)GD.

Momentum (:class:`SGDMomentum`) follows ``torch.optim.SGD`` to the letter, with d_t = G_t the direction
above (weight decay included: it goes through the buffer, PyTorch's order), μ = momentum, τ = dampening:

    buf_0 = d_0                                (the first step: the buffer is the direction itself)
    buf_t = μ buf_{t−1} + (1 − τ) d_t          (t ≥ 1)
    step_t = d_t + μ buf_t  (Nesterov)   or   buf_t  (heavy ball)
    θ_{t+1} = θ_t − η_t step_t

μ = 0 is the plain step θ − η G, computed exactly as without momentum. (refsam's "decoupled" weight
decay is decoupled from the *perturbation*, not SGDW/AdamW's decoupling from the momentum buffer.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..objective import Problem, decay_times
from ..sam import SAM
from ..validation import check_nonnegative

__all__ = ["SGDMomentum", "StepTerms", "descent_direction", "perturbation_of", "sam_step", "sharpness_chunks"]

Array = NDArray[np.float64]


class StepTerms(NamedTuple):
    """The terms of one step at θ (module docstring), each shape (d,)."""

    g: Array  # the perturbation's gradient
    eps: Array  # ε(θ; g)
    w_hat: Array  # ŵ = θ + ε
    direction: Array  # G


def descent_direction(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None = None,
                      weights: ArrayLike | None = None, *, removed_batches: bool = False) -> StepTerms:
    """g, ε, ŵ and G at θ on batch ``idx`` (None: full batch); trusts its inputs. Cost: two gradients.

    θ may be a block (d, K) of K runs with ``weights`` (n, K): every term is then (d, K), column k the
    step of run k (:meth:`Problem.grad`, :meth:`SAM.perturbation` on blocks).
    ``removed_batches``: a batch (or m-sharpness chunk) whose sample weights are all zero — every point
    removed, as in a counterfactual bank's replays — has F_{B,w} ≡ 0, so g = 0 and ε = 0 (instead of
    SAM's ZeroGradientError); the step is then the weight decay's alone (:func:`perturbation_of`).
    """
    lam_in, lam_out = problem.weight_decay_split()
    chunks = sharpness_chunks(np.arange(problem.n) if idx is None else np.asarray(idx), sam.m_sharpness)
    if len(chunks) == 1:
        g = problem.grad(theta, idx, weights) + decay_times(lam_in, theta)
        eps = perturbation_of(problem, sam, theta, g, idx, weights, removed_batches)
        w_hat = theta + eps
        direction = (problem.grad(w_hat, idx, weights) + decay_times(lam_in, w_hat)
                     + decay_times(lam_out, theta))
        return StepTerms(g, eps, w_hat, direction)
    size = sum(len(chunk) for chunk in chunks)
    direction, eps = decay_times(lam_out, theta), np.zeros_like(theta)
    for chunk in chunks:  # m-sharpness: one perturbation per chunk
        share = len(chunk) / size
        eps_c = perturbation_of(problem, sam, theta,
                                problem.grad(theta, chunk, weights) + decay_times(lam_in, theta), chunk,
                                weights, removed_batches)
        w_hat_c = theta + eps_c
        direction = direction + share * (problem.grad(w_hat_c, chunk, weights)
                                         + decay_times(lam_in, w_hat_c))
        eps = eps + share * eps_c
    g = problem.grad(theta, idx, weights) + decay_times(lam_in, theta)
    return StepTerms(g, eps, theta + eps, direction)


def perturbation_of(problem: Problem, sam: SAM, theta: Array, g: Array, idx: ArrayLike | None,
                    weights: ArrayLike | None, removed_batches: bool) -> Array:
    """ε(θ; g) on batch ``idx``; with ``removed_batches``, ε = 0 for every run (column) whose batch
    weights are all zero and whose g is exactly zero (F_{B,w} ≡ 0: nothing to perturb against). In
    coupled mode g = λθ ≠ 0 there, and the rule applies as usual."""
    if not removed_batches:
        return sam.perturbation(theta, g)
    w = problem.weights if weights is None else np.asarray(weights)
    rows = w if idx is None else w[np.asarray(idx)]  # (|B|,) or (|B|, K)
    empty = ~np.any(rows != 0, axis=0) & ~np.any(g != 0, axis=0)  # () or (K,)
    if not np.any(empty):
        return sam.perturbation(theta, g)
    if g.ndim == 1:
        return np.zeros_like(g)
    eps = np.zeros_like(g)
    live = ~empty
    if np.any(live):
        eps[:, live] = sam.perturbation(theta[:, live], g[:, live])
    return eps


def sharpness_chunks(idx: NDArray[np.int64], m: int | None) -> list[NDArray[np.int64]]:
    """The chunks of a batch for m-sharpness: consecutive runs of m indices in the batch's order (the last
    may be shorter); the whole batch as one chunk when m is None or ≥ |B|."""
    if m is None or len(idx) <= m:
        return [idx]
    return [idx[lo:lo + m] for lo in range(0, len(idx), m)]


def sam_step(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None, lr: float,
             weights: ArrayLike | None = None) -> tuple[Array, Array]:
    """One SAM step θ − η G(θ) on batch ``idx`` (module docstring). Returns (θ_{t+1}, ε_t)."""
    terms = descent_direction(problem, sam, theta, idx, weights)
    return theta - lr * terms.direction, terms.eps


@dataclass(frozen=True)
class SGDMomentum:
    """The base optimizer's momentum, with ``torch.optim.SGD``'s keyword names and semantics.

    Parameters
    ----------
    momentum : float in [0, 1)
        μ; 0 (the default) is plain SGD.
    dampening : float in [0, 1]
        τ: the buffer adds (1 − τ) d_t from the second step on.
    nesterov : bool
        The step is d_t + μ buf_t instead of buf_t. (PyTorch rejects Nesterov with dampening ≠ 0;
        refsam accepts it, with the same formulas.)
    """

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        mu = check_nonnegative("momentum", self.momentum)
        tau = check_nonnegative("dampening", self.dampening)
        if mu >= 1.0:
            raise InvalidInputError(f"`momentum` must lie in [0, 1), got {mu}")
        if tau > 1.0:
            raise InvalidInputError(f"`dampening` must lie in [0, 1], got {tau}")
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise InvalidInputError(f"`nesterov` must be True or False, got {self.nesterov!r}")
        if self.nesterov and mu == 0.0:
            raise InvalidInputError(
                "`nesterov=True` needs `momentum` > 0 (as in torch.optim.SGD), got momentum=0")
        object.__setattr__(self, "momentum", mu)
        object.__setattr__(self, "dampening", tau)
        object.__setattr__(self, "nesterov", bool(self.nesterov))

    @property
    def active(self) -> bool:
        """False for μ = 0: the step is θ − η G and no buffer is kept."""
        return self.momentum != 0.0

    def buffer_weight(self, t: int) -> float:
        """The factor of d_t in buf_t: 1 at the first step, 1 − τ afterwards."""
        return 1.0 if t == 0 else 1.0 - self.dampening

    def update(self, buf: Array | None, direction: Array, t: int) -> tuple[Array, Array]:
        """(buf_t, step_t) from buf_{t−1} (None at t = 0) and d_t (module docstring)."""
        if t == 0 or buf is None:
            new_buf = direction.copy()  # buf_0 = d_0
        else:
            new_buf = self.momentum * buf + (1.0 - self.dampening) * direction
        step = direction + self.momentum * new_buf if self.nesterov else new_buf
        return new_buf, step

    def config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "dampening": self.dampening, "nesterov": self.nesterov}
