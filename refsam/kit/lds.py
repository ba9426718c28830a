"""Grading attribution scores on a counterfactual bank: the linear datamodeling score and group effects.

Conventions
-----------
* Scores τ (n, m) in refsam's sign: τ_iq ≈ I_i(f_q) = ∂f_q/∂w_i (removing i changes f_q by ≈ −τ_iq).
  A method's additive prediction for subset S is  g_q(S) = Σ_{i∈S} τ_iq  ((masks @ τ), shape (K, m)).
* LDS (TRAK's linear datamodeling score), per query q: the Spearman rank correlation over the K subsets
  of g_q(S_k) against the bank's f_q(θ(S_k)); ``mean`` is its mean over the queries where it is defined
  (a constant column has no ranks: NaN, counted in ``undefined``). Spearman is Pearson on the average
  ranks (ties share their mean rank), as scipy.stats.spearmanr computes it. Scaling one query's scores
  by c > 0 leaves its LDS unchanged.
* For τ = I (exact) the first-order identity is  f(S) ≈ f(1) + Σ_{i∈S} I_i − Σ_i I_i  =  f(1) − Σ_{i∉S} I_i,
  so the exact influence's LDS → 1 as the removed group shrinks (subset_ratio → 1, "weights" banks).
* Group effects: actual f(θ(S)) − f(θ(1)) against the prediction −Σ_{i∉S} τ_i, for the bank's random
  subsets and for new groups (random of chosen sizes; coherent: one class, the top-k by total influence
  Σ_q τ_iq), with the exact Newton step from θ̂ at w = 1_S as the second-order reference at a root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.stats
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..ground_truth.bank import CounterfactualBank, counterfactual_outputs, model_outputs
from ..influence.fixed_point import FixedPoint
from ..influence.linearisation import linearise
from ..validation import check_finite_array

__all__ = ["GroupEffects", "LDSResult", "group_effects", "lds", "spearman_columns"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class LDSResult:
    """The LDS of one score array on one bank.

    mean : float                the mean over queries with a defined correlation (nan if none)
    per_query : array (m,)      Spearman over subsets for each query (nan where a column is constant)
    undefined : int             queries without a defined correlation
    """

    mean: float
    per_query: Array
    undefined: int

    @property
    def spread(self) -> tuple[float, float, float]:
        """(10th percentile, median, 90th percentile) of the defined per-query values."""
        ok = self.per_query[np.isfinite(self.per_query)]
        if ok.size == 0:
            return (float("nan"),) * 3
        return tuple(float(v) for v in np.percentile(ok, [10, 50, 90]))  # type: ignore[return-value]


def spearman_columns(A: Array, B: Array) -> Array:
    """Spearman's ρ of column q of A against column q of B, (m,): Pearson of the average ranks; nan for
    a constant column."""
    ra = scipy.stats.rankdata(A, axis=0)  # (K, m)
    rb = scipy.stats.rankdata(B, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    norms = np.sqrt(np.einsum("ij,ij->j", ra, ra) * np.einsum("ij,ij->j", rb, rb))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.einsum("ij,ij->j", ra, rb) / norms
    return np.where(norms > 0, np.clip(rho, -1.0, 1.0), np.nan)


def _check_scores(scores: ArrayLike, bank: object) -> Array:
    if not isinstance(bank, CounterfactualBank):
        raise InvalidInputError(f"`bank` must be a refsam CounterfactualBank, got {type(bank).__name__}")
    tau = check_finite_array("scores", scores)
    n, m = bank.masks.shape[1], bank.outputs.shape[1]
    if tau.ndim == 1 and m == 1:
        tau = tau[:, None]
    if tau.shape != (n, m):
        hint = "; transpose it" if tau.shape == (m, n) else ""
        raise InvalidInputError(f"`scores` must have shape (n_train, n_queries) = {(n, m)} like the bank, "
                                f"got {tau.shape}{hint}")
    return tau


def lds(scores: ArrayLike, bank: CounterfactualBank) -> LDSResult:
    """The linear datamodeling score of ``scores`` (n, m), refsam's sign, on ``bank`` (module docstring)."""
    tau = _check_scores(scores, bank)
    predicted = bank.masks.astype(np.float64) @ tau  # Σ_{i∈S_k} τ_iq, (K, m)
    per_query = spearman_columns(predicted, bank.outputs)
    defined = np.isfinite(per_query)
    mean = float(np.mean(per_query[defined])) if np.any(defined) else float("nan")
    return LDSResult(mean, per_query, int(np.count_nonzero(~defined)))


@dataclass(frozen=True)
class GroupEffects:
    """Actual against predicted change of every query for groups of removed training points.

    names : list of str             "bank" (the bank's subsets), "random", "class c", "top-k"
    sizes : int array (G,)          removed points per group
    actual : array (G, m)           f(θ(S)) − f(θ(1)),  S = the kept points
    predicted : array (G, m)        −Σ_{i∉S} τ_i  (first order)
    newton : array (G, m) or None   f(θ̂ − J_S⁻¹ G(θ̂; w_S)) − f(θ̂): the exact Newton step at w = 1_S
                                    (roots and kind "weights" only)
    """

    names: list[str]
    sizes: NDArray[np.int64]
    actual: Array
    predicted: Array
    newton: Array | None

    def summary(self) -> list[dict[str, Any]]:
        """Per group kind and size: mean |actual|, mean |predicted − actual| / mean |actual|, and the same
        for the Newton step."""
        rows = []
        keys = sorted({(name, int(size)) for name, size in zip(self.names, self.sizes)},
                      key=lambda k: (k[0], k[1]))
        for name, size in keys:
            sel = np.array([nm == name and s == size for nm, s in zip(self.names, self.sizes)])
            scale = float(np.mean(np.abs(self.actual[sel])))
            row = {"group": name, "removed": size, "count": int(sel.sum()), "mean_abs_actual": scale,
                   "first_order_rel_err": float(np.mean(np.abs(self.predicted[sel] - self.actual[sel])))
                   / max(scale, 1e-300)}
            if self.newton is not None:
                row["newton_rel_err"] = float(np.mean(np.abs(self.newton[sel] - self.actual[sel]))) / max(
                    scale, 1e-300)
            rows.append(row)
        return rows


def group_effects(scores: ArrayLike, bank: CounterfactualBank, *, sizes: ArrayLike | None = None,
                  per_size: int = 8, top_k: ArrayLike | None = None, classes: bool | None = None,
                  seed: int = 0) -> GroupEffects:
    """Actual vs first-order predicted change for the bank's subsets and for new groups.

    The bank must have been built in this process (its problem is attached; a loaded bank:
    `refsam.ground_truth.bank.with_context()`) when new groups are asked for. ``sizes``: removed-group
    sizes of ``per_size`` new random groups each; ``top_k``: sizes k of the coherent group "the k points
    with the largest Σ_q τ_iq" (removing them lowers the queries' total output most, to first order);
    ``classes``: also remove each class in turn (None: when the bank's problem is attached). New groups
    are computed with the bank's own kind and output
    (`refsam.ground_truth.bank.counterfactual_outputs()`).
    At a root with a "weights" bank, ``newton`` holds the second-order reference (`GroupEffects`).
    """
    tau = _check_scores(scores, bank)
    n = bank.masks.shape[1]
    total = tau.sum(axis=0)  # Σ_i τ_iq
    masks = [bank.masks]
    names = ["bank"] * bank.n_subsets
    extra: list[NDArray[np.bool_]] = []
    rng = np.random.default_rng(seed)
    if classes is None:
        classes = bank.context is not None
    for size in [] if sizes is None else [int(s) for s in np.atleast_1d(sizes)]:
        if not 1 <= size < n:
            raise InvalidInputError(f"`sizes` entries must lie in 1..{n - 1} (removed points), got {size}")
        for _ in range(per_size):
            mask = np.ones(n, dtype=bool)
            mask[rng.choice(n, size, replace=False)] = False
            extra.append(mask)
            names.append("random")
    order = np.argsort(-tau.sum(axis=1), kind="stable")
    for k in [] if top_k is None else [int(k) for k in np.atleast_1d(top_k)]:
        if not 1 <= k < n:
            raise InvalidInputError(f"`top_k` entries must lie in 1..{n - 1}, got {k}")
        mask = np.ones(n, dtype=bool)
        mask[order[:k]] = False
        extra.append(mask)
        names.append(f"top-{k}")
    if extra or classes:
        if bank.context is None:
            raise InvalidInputError("new groups need the bank's problem: build the bank in this process, or "
                                    "attach it with refsam.ground_truth.bank.with_context")
        problem = bank.context[0]
        if classes:
            for c in np.unique(problem.y):
                mask = problem.y != c
                if mask.any():
                    extra.append(mask)
                    names.append(f"class {int(c)}")
    if extra:
        masks.append(np.array(extra))
    all_masks = np.concatenate(masks)  # (G, n)
    new_outputs = _outputs_for(bank, np.array(extra)) if extra else np.zeros((0, tau.shape[1]))
    actual = np.concatenate([bank.outputs, new_outputs]) - bank.base
    predicted = all_masks.astype(np.float64) @ tau - total  # −Σ_{i∉S} τ_i
    newton = _newton_outputs(bank, all_masks) if _has_newton(bank) else None
    return GroupEffects(names, (~all_masks).sum(axis=1).astype(np.int64), actual, predicted, newton)


def _outputs_for(bank: CounterfactualBank, masks: NDArray[np.bool_]) -> Array:
    """The bank's counterfactual outputs for explicit masks (kept points), computed as the bank does."""
    assert bank.context is not None
    if bank.meta["output"].startswith("callable:"):
        raise InvalidInputError("new groups cannot be computed for a bank whose output is a function "
                                "(it is not saved with the bank)")
    problem, sam, target, X_test, y_test = bank.context
    seeds = None if bank.meta["seeds"] is None else tuple(bank.meta["seeds"])
    return counterfactual_outputs(problem, sam, target, X_test, y_test, masks, bank.meta["kind"],
                                  bank.meta["output"], seeds)


def _has_newton(bank: CounterfactualBank) -> bool:
    return (bank.context is not None and isinstance(bank.context[2], FixedPoint)
            and bank.meta["kind"] == "weights" and not bank.meta["output"].startswith("callable:"))


def _newton_outputs(bank: CounterfactualBank, masks: NDArray[np.bool_]) -> Array:
    """f(θ̂ − J(θ̂; w_S)⁻¹ G(θ̂; w_S)) − f(θ̂) per mask: one exact Newton step from the root at w = w⁰ ⊙ 1_S
    (G the residual of the root's optimizer, its weight decay included)."""
    assert bank.context is not None
    problem, sam, target, X_test, y_test = bank.context
    theta_hat = target.theta
    base = model_outputs(problem.model, theta_hat, X_test, y_test, bank.meta["output"])
    out = np.empty((len(masks), X_test.shape[0]))
    for k, mask in enumerate(masks):
        lin = linearise(problem, sam, theta_hat, problem.weights * mask, optimizer=target.optimizer)
        step = scipy.linalg.solve(lin.jacobian, -lin.residual)  # J_S s = −G_S
        out[k] = model_outputs(problem.model, theta_hat + step, X_test, y_test, bank.meta["output"]) - base
    return out
