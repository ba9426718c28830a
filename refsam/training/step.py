"""One SAM step: the descent gradient g̃ that SAM hands the base optimizer, and the optimizer's update.

With λ_in = ``problem.l2`` (an L2 term that is part of the loss), on batch B with sample weights w, and
``sam`` the rule of this step (`SAM.at_step(t)`: its ρ_t, a plain step of interval SAM, Friendly SAM's
first step):

    g   = ∇F_{B,w}(θ) + λ_in θ                   the gradient the perturbation is built from
    u   = g  (Friendly SAM: u = g − σ m, m its running mean; `SAM.perturbation_input`)
    ε   = ε(θ; u)                                the SAM rule (refsam.sam), masked by ``perturb_mask``
    ŵ   = θ + ε                                  the perturbed point
    g^p = ∇F_{B,w}(ŵ) + λ_in ŵ                   the gradient at the perturbed point
    g̃   = φ(g, g^p)                              the direction (`SAM.descent`): g^p for SAM; GSAM's and
                                                 the gradient-norm penalty's mixes of g and g^p
    m'  = `SAM.next_rule_state(g, m)`            Friendly SAM's running mean (no state otherwise)
    (θ', s') = optimizer.update(t, η, θ, s, g̃)   (refsam.training.optimizers: SGD adds its weight decay
                                                 λ θ at the unperturbed point, momentum, the step)

With m-sharpness (``SAM(..., m_sharpness=m)``, the "sam" direction and a stateless rule) the batch is cut
into consecutive chunks C of m samples (the last may be smaller), each with its own perturbation, and
the descent gradient averages them:

    g_C = ∇F_{C,w}(θ) + λ_in θ,   ŵ_C = θ + ε(θ; g_C),   g̃ = Σ_C (|C|/|B|) [∇F_{C,w}(ŵ_C) + λ_in ŵ_C]

(one chunk: the equations above). The recorded ε_t is then the size-weighted mean of the ε_C.

A batch (or chunk) whose sample weights are all zero — every point removed, as in a counterfactual
bank's replays (`refsam.ground_truth.bank`) — has F_{B,w} ≡ 0: with λ_in = 0 its g is 0, and the SAM
and ASAM rules refuse it (ZeroGradientError). Asked for with ``removed_batches=True`` (the bank's
replays only; training keeps the error), such a run takes ε = 0 there, so g̃ = 0 and the step is the
optimizer's on its weight decay alone; for a block of runs, column by column.

On the full batch, the optimizer's residual of g̃ (for SGD: G(θ; w) = g̃(θ; w) + λ θ, λ its weight decay)
is what vanishes at the SAM fixed points (`refsam.influence.fixed_point`; rules whose step map changes
from step to step have none, `SAM.root_rule`). ρ = 0 gives ε = 0 exactly, so the step is exactly the
base optimizer's (for the "sam" direction).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..models import BatchDerivatives
from ..objective import Problem, decay_times
from ..sam import SAM
from .optimizers import Optimizer

__all__ = ["Perturbation", "StepTerms", "batch_descent", "chunk_descent", "perturbations", "residual",
           "root_residual", "root_scale", "sam_gradient", "sharpness_chunks"]

Array = NDArray[np.float64]


class StepTerms(NamedTuple):
    """The terms of one step at θ (module docstring), each shape (d,) (or (d, K) for a block of K runs)."""

    g: Array  # the perturbation's gradient (of the whole batch)
    eps: Array  # ε(θ; u) (with m-sharpness: the size-weighted mean of the chunks' ε_C)
    w_hat: Array  # ŵ = θ + ε
    descent: Array  # g̃, the descent gradient handed to the optimizer
    rule_state: Array | None = None  # the rule's state after the step (Friendly SAM's m'; else None)


class Perturbation(NamedTuple):
    """One perturbation of a step: the whole batch, or one m-sharpness chunk C (module docstring).

    ``at_theta`` and ``at_w_hat`` are the derivatives of F_{C,w} at θ and at ŵ_C (``problem.at``), kept
    for the step's linearisation; None for a block of runs (only values are computed there).
    """

    idx: NDArray[np.int64]  # C
    share: float  # |C|/|B|
    g: Array  # g_C = ∇F_{C,w}(θ) + λ_in θ
    eps: Array  # ε_C = ε(θ; u_C)
    w_hat: Array  # ŵ_C = θ + ε_C
    descent: Array | None  # g̃_C = φ(g_C, g^p_C) (None when not asked for: see perturbations)
    at_theta: BatchDerivatives | None
    at_w_hat: BatchDerivatives | None
    u: Array | None = None  # the rule's input u_C (Friendly SAM's d = g − σm; None: u_C = g_C)
    g_p: Array | None = None  # g^p_C = ∇F_{C,w}(ŵ_C) + λ_in ŵ_C where computed


def perturbations(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None = None,
                  weights: ArrayLike | None = None, g: Array | None = None,
                  w_hat: Array | None = None, descent: bool = True,
                  removed_batches: bool = False, rule_state: Array | None = None) -> list[Perturbation]:
    """The step's perturbations at θ on batch ``idx`` (None: full batch), in the batch's order: the one
    home of the SAM step's equation (module docstring); trusts its inputs. Cost: two gradients, one
    where ε = 0 exactly (ŵ = θ: the derivatives at θ serve both points).

    θ may be a block (d, K) of K runs with ``weights`` (n, K): every term is then (d, K) (block
    replays). ``g`` and ``w_hat``: the gradient and perturbed point of a single-perturbation step when
    the caller has them already (a recorded run); they are used as given. ``descent=False`` leaves g̃_C
    out (None; `chunk_descent()` computes it later): the derivatives of a recorded SGD step never
    need it, and it costs a batch gradient. ``removed_batches``: ε_C = 0 for a run (column) whose
    weights on C are all zero and whose g_C is exactly 0, instead of the rule's ZeroGradientError
    (module docstring).
    """
    lam_in = problem.l2
    batch = np.arange(problem.n) if idx is None else np.asarray(idx)
    chunks = sharpness_chunks(batch, sam.m_sharpness)
    block = np.ndim(theta) == 2
    out = []
    for chunk in chunks:
        rows = idx if len(chunks) == 1 else chunk  # one chunk: the batch as given (None stays the full batch)
        at_theta = None if block else problem.at(theta, rows, weights)
        gradient = None  # ∇F_{C,w}(θ) where computed
        if g is None or len(chunks) > 1:
            gradient = problem.grad(theta, rows, weights) if at_theta is None else at_theta.grad()
            g_c = gradient + decay_times(lam_in, theta)  # g_C = ∇F_{C,w}(θ) + λ_in θ
        else:
            g_c = g
        u_c = sam.perturbation_input(g_c, rule_state)  # u_C: g_C, or Friendly SAM's g − σm
        if w_hat is None or len(chunks) > 1:
            eps_c = (_removed_perturbation(problem, sam, theta, u_c, rows, weights) if removed_batches
                     else sam.perturbation(theta, u_c))  # ε_C = ε(θ; u_C), recorded as computed
            w_hat_c = theta + eps_c  # ŵ_C = θ + ε_C
        else:
            w_hat_c = w_hat
            eps_c = w_hat - theta  # (a recorded run's ŵ: its ε is the record's)
        # ε = 0 exactly (ρ = 0: a plain step of an interval, a schedule's zero, an ERM run): ŵ_C = θ, and
        # the derivatives at θ are those at ŵ_C (one gradient per step instead of two)
        plain = not np.any(eps_c)
        at_w_hat = at_theta if plain or block else problem.at(w_hat_c, rows, weights)
        descent_c = g_p = None
        if descent or block or sam.direction != "sam":
            if plain and gradient is not None:
                grad_hat = gradient
            else:
                grad_hat = problem.grad(w_hat_c, rows, weights) if at_w_hat is None else at_w_hat.grad()
            g_p = chunk_descent(problem, grad_hat, w_hat_c)  # g^p_C
            descent_c = (_removed_descent(problem, sam, g_c, g_p, rows, weights) if removed_batches
                         else sam.descent(g_c, g_p))  # g̃_C = φ(g_C, g^p_C)
        out.append(Perturbation(np.asarray(chunk), len(chunk) / len(batch), g_c, eps_c, w_hat_c, descent_c,
                                at_theta, at_w_hat, None if u_c is g_c else u_c, g_p))
    return out


def _removed_perturbation(problem: Problem, sam: SAM, theta: Array, g: Array, rows: ArrayLike | None,
                          weights: ArrayLike | None) -> Array:
    """ε(θ; g) on the batch ``rows``, except ε = 0 for every run (column of a block) whose weights there
    are all zero and whose g is exactly zero: F_{B,w} ≡ 0, nothing to perturb against. With an L2 term
    in the loss g = λ_in θ ≠ 0 there, and the rule applies as usual."""
    empty = _empty(problem, g, rows, weights)
    if not np.any(empty):
        eps_all: Array = sam.perturbation(theta, g)
        return eps_all
    eps = np.zeros_like(g)
    if g.ndim == 2:
        live = ~empty
        if np.any(live):
            eps[:, live] = sam.perturbation(theta[:, live], g[:, live])
    return eps


def _empty(problem: Problem, g: Array, rows: ArrayLike | None,
           weights: ArrayLike | None) -> NDArray[np.bool_]:
    """Which runs (columns of a block; a 0-d array for one run) have all their weights zero on ``rows``
    and an exactly zero g there: F_{B,w} ≡ 0 (module docstring)."""
    w = problem.weights if weights is None else np.asarray(weights)
    kept = w if rows is None else w[np.asarray(rows)]  # (|B|,) or (|B|, K)
    return np.asarray(~np.any(kept != 0, axis=0) & ~np.any(g != 0, axis=0))


def _removed_descent(problem: Problem, sam: SAM, g: Array, g_p: Array, rows: ArrayLike | None,
                     weights: ArrayLike | None) -> Array:
    """φ(g, g^p), except g̃ = g^p (= 0 there) for every run whose batch is removed (`_empty`): a direction
    undefined at g = 0 (the unit-gradient mix) has nothing to mix there."""
    empty = _empty(problem, g, rows, weights)
    if not np.any(empty):
        descent: Array = sam.descent(g, g_p)
        return descent
    out = np.array(g_p, dtype=np.float64)
    if g.ndim == 2 and not np.all(empty):
        live = ~empty
        out[:, live] = sam.descent(g[:, live], g_p[:, live])
    return out


def chunk_descent(problem: Problem, grad_hat: Array, w_hat: Array) -> Array:
    """g^p_C = ∇F_{C,w}(ŵ_C) + λ_in ŵ_C from the data gradient at ŵ_C (module docstring): the gradient at
    the perturbed point, which is g̃_C for the "sam" direction."""
    return grad_hat + decay_times(problem.l2, w_hat)


def batch_descent(shares: list[float], descents: list[Array]) -> Array:
    """g̃ = Σ_C (|C|/|B|) g̃_C over a batch's perturbations (one perturbation: g̃_C itself, unchanged)."""
    if len(descents) == 1:
        return descents[0]
    return sum((share * d for share, d in zip(shares, descents)), np.zeros_like(descents[0]))


def sam_gradient(problem: Problem, sam: SAM, theta: Array, idx: ArrayLike | None = None,
                 weights: ArrayLike | None = None, *, removed_batches: bool = False,
                 rule_state: Array | None = None) -> StepTerms:
    """g, ε, ŵ and g̃ at θ on batch ``idx`` (None: full batch), from `perturbations()`; trusts its
    inputs. With m-sharpness, g̃ = Σ_C (|C|/|B|) g̃_C, ε the size-weighted mean of the ε_C, and g the whole
    batch's gradient (one more gradient: what a run records the norm of). ``removed_batches``: see
    `perturbations()` (a counterfactual bank's replays). ``sam`` is the rule of this step
    (`SAM.at_step`), ``rule_state`` its state before it; the returned terms carry its state after."""
    parts = perturbations(problem, sam, theta, idx, weights, removed_batches=removed_batches,
                          rule_state=rule_state)
    descents = [p.descent for p in parts if p.descent is not None]  # every one: descent=True
    if len(parts) == 1:
        part = parts[0]
        return StepTerms(part.g, part.eps, part.w_hat, descents[0], sam.next_rule_state(part.g, rule_state))
    descent = batch_descent([p.share for p in parts], descents)
    eps = sum((p.share * p.eps for p in parts), np.zeros_like(theta))
    g = problem.grad(theta, idx, weights) + decay_times(problem.l2, theta)
    return StepTerms(g, eps, theta + eps, descent)


def sharpness_chunks(idx: NDArray[np.int64], m: int | None) -> list[NDArray[np.int64]]:
    """The chunks of a batch for m-sharpness: consecutive runs of m indices in the batch's order (the last
    may be shorter); the whole batch as one chunk when m is None or ≥ |B|."""
    if m is None or len(idx) <= m:
        return [idx]
    return [idx[lo:lo + m] for lo in range(0, len(idx), m)]


def residual(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta: Array,
             weights: ArrayLike | None = None) -> Array:
    """G(θ; w): the optimizer's full-batch residual of the SAM descent gradient, what vanishes at a fixed
    point (SGD: g̃ + λθ; ``optimizer=None``: g̃ alone, no weight decay); trusts its inputs (``sam`` a
    rule with one step map, `SAM.root_rule`)."""
    return root_residual(optimizer, theta, sam_gradient(problem, sam, theta, None, weights).descent)


def root_residual(optimizer: Optimizer | None, theta: Array, descent: Array) -> Array:
    """G from the full-batch descent gradient g̃: ``optimizer.residual(θ, g̃)``, or g̃ alone without an
    optimizer (no weight decay)."""
    return descent if optimizer is None else optimizer.residual(theta, descent)


def root_scale(optimizer: Optimizer | None, theta: Array, descent: Array) -> float | Array:
    """D = ∂G/∂g̃, diagonal: ``optimizer.residual_scale(θ, g̃)`` (1 for SGD and Adam, AdamW's diagonal),
    1 without an optimizer."""
    return 1.0 if optimizer is None else optimizer.residual_scale(theta, descent)
