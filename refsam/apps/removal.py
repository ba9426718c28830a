"""Data removal: remove the training points most harmful to a validation loss, retrain, compare.

* `remove_harmful()` — one k: the predicted change of the validation loss beside the actual one.
* `removal_curves()` — k over a grid: test accuracy and loss after removing the top k of each
  ranking and retraining, with the baselines "random" (mean of seeded random removals) and "loss"
  (the highest training losses first), and each ranking's predicted change of the validation loss
  −Σ_{j∈S} I_j(f) beside the actual one. "Retraining" is the recorded procedure re-run with w_j = 0
  for the removed points (same θ_0, batches and learning rates), one replay per removal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..objective import Problem
from ..training import replay
from ..validation import check_positive_int, check_progress, check_random_state
from .fitting import Fit, check_fit, influence, progress_line, resolve_method

__all__ = ["RemovalCurve", "RemovalResult", "accuracy", "mean_loss", "removal_curves", "remove_harmful",
           "retrain_without"]

Array = NDArray[np.float64]


def mean_loss(problem: Problem, theta: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
    """f(θ) = (1/m) Σ_k ℓ(z_k, θ), the mean loss on (X, y)."""
    return float(np.mean(problem.model.losses(theta, X, y)))


def accuracy(problem: Problem, theta: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
    """The fraction of (X, y) the model at θ classifies correctly."""
    return float(np.mean(np.argmax(problem.model.predict_proba(theta, X), axis=1) == np.asarray(y)))


def retrain_without(fit_: Fit, removed: ArrayLike) -> Array:
    """θ_T of the same run (init, batches, learning rates, rule) with w_j = 0 for j in ``removed``."""
    check_fit(fit_)
    weights = fit_.problem.weights.copy()
    weights[np.asarray(removed, dtype=np.int64)] = 0.0
    return replay(fit_.problem, fit_.trajectory, weights=weights, progress=False).theta_final


@dataclass
class RemovalResult:
    """Removing ``removed`` from training: predicted and actual change of the validation loss."""

    method: str
    removed: NDArray[np.int64]  # (k,) training indices
    predicted_change: float  # −Σ_{j∈S} I_j(f); nan for random removal
    actual_change: float  # f(θ_T without S) − f(θ_T)


def remove_harmful(fit_: Fit, X_val: ArrayLike, y_val: ArrayLike, k: int, methods: Any = None,
                   n_random: int = 3, seed: object = 0, progress: bool | None = None) -> list[RemovalResult]:
    """Remove the k training points most harmful to the mean validation loss f, per method, retrain
    with the same procedure (w_j = 0), and compare the actual change of f with the prediction.

    The most harmful points have the largest ``I_j(f)`` (up-weighting them raises f), so the linear
    prediction of removing the set S is ``Δf ≈ −Σ_{j∈S} I_j(f)`` (negative: f should fall). ``n_random``
    random sets of k points give the reference ("random" rows, no prediction).
    """
    progress = check_progress(progress)
    check_fit(fit_)
    problem = fit_.problem
    k = check_positive_int("k", k)
    if k >= problem.n:
        raise InvalidInputError(f"`k` must be < n={problem.n}, got {k}")
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    methods = fit_.available_methods() if methods is None else [resolve_method(m).name for m in methods]
    f0 = mean_loss(problem, fit_.theta_final, X_val, y_val)
    results = []
    for i, method in enumerate(methods):
        progress_line(f"  removal [{i + 1}/{len(methods)}] {method}: influence and retraining", progress)
        inf_f = influence(fit_, method, X_val, y_val, progress=False).mean(axis=1)  # I_j(f), (n,)
        removed = np.sort(np.argsort(-inf_f, kind="stable")[:k])
        predicted = -float(inf_f[removed].sum())
        actual = mean_loss(problem, retrain_without(fit_, removed), X_val, y_val) - f0
        results.append(RemovalResult(method, removed, predicted, actual))
    rng = check_random_state(seed)
    for _ in range(n_random):
        removed = np.sort(rng.choice(problem.n, size=k, replace=False))
        actual = mean_loss(problem, retrain_without(fit_, removed), X_val, y_val) - f0
        results.append(RemovalResult("random", removed, float("nan"), actual))
    return results




@dataclass
class RemovalCurve:
    """One ranking's removal curve: for each k of ``ks``, the run retrained without its top k points."""

    method: str
    ks: NDArray[np.int64]
    test_accuracy: Array  # (len(ks),)
    test_loss: Array  # mean test loss
    val_loss_change: Array  # actual change of the validation loss f
    predicted_val_change: Array  # −Σ_{j∈S} I_j(f); nan for the baselines
    flipped_removed: Array  # flipped labels among the removed points (nan without ``flipped``)


def removal_curves(fit_: Fit, X_val: ArrayLike, y_val: ArrayLike, X_test: ArrayLike, y_test: ArrayLike,
                   ks: ArrayLike, methods: Any = None, extra_scores: dict[str, ArrayLike] | None = None,
                   n_random: int = 3, flipped: ArrayLike | None = None, seed: object = 0,
                   progress: bool | None = None) -> list[RemovalCurve]:
    """Remove the top k training points of each ranking for every k in ``ks``, retrain, and measure.

    Rankings: each of ``methods`` (default: every method that applies to the fit) by I_j(f), f = the
    mean validation loss (largest first: the most harmful); ``extra_scores``: name → (n,) estimates of
    the same I_j(f) by other estimators (TRAK, K-FAC, …), ranked and predicted the same way; and the
    baselines "loss" (highest training loss at θ_T first) and "random" (the mean over ``n_random``
    seeded random orders). Module docstring for "retrain". ``flipped``: the mask of flipped labels, to
    count how many each removal takes out.
    """
    progress = check_progress(progress)
    check_fit(fit_)
    problem = fit_.problem
    ks_arr = np.unique(np.asarray(ks, dtype=np.int64).ravel())
    if ks_arr.size == 0 or ks_arr[0] < 0 or ks_arr[-1] >= problem.n:
        raise InvalidInputError(f"`ks` must be removal counts in 0..{problem.n - 1}, got {np.asarray(ks)!r}")
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    n_random = check_positive_int("n_random", n_random, minimum=0) if n_random else 0
    mask = None if flipped is None else np.asarray(flipped, dtype=bool)
    if mask is not None and mask.shape != (problem.n,):
        raise InvalidInputError(f"`flipped` must have shape ({problem.n},), got {mask.shape}")
    if methods is None:
        methods = list(fit_.available_methods())
    else:
        methods = [resolve_method(m).name for m in methods]
    rankings: dict[str, tuple[Any, Array | None]] = {}
    for i, method in enumerate(methods):
        progress_line(f"  removal curves [{i + 1}/{len(methods)}] {method}: influence", progress)
        scores = influence(fit_, method, X_val, y_val, progress=False).mean(axis=1)  # I_j(f)
        rankings[method] = (np.argsort(-scores, kind="stable"), scores)
    for name, raw in (extra_scores or {}).items():
        scores = np.asarray(raw, dtype=np.float64)
        if scores.shape != (problem.n,) or not np.all(np.isfinite(scores)):
            raise InvalidInputError(f"`extra_scores[{name!r}]` must be {problem.n} finite scores")
        rankings[name] = (np.argsort(-scores, kind="stable"), scores)
    losses = problem.model.losses(fit_.theta_final, problem.X, problem.y)
    rankings["loss"] = (np.argsort(-np.asarray(losses), kind="stable"), None)
    rng = check_random_state(seed)
    random_orders = [rng.permutation(problem.n) for _ in range(n_random)]
    f0 = mean_loss(problem, fit_.theta_final, X_val, y_val)
    curves = []
    for name, (order, scores) in rankings.items():
        progress_line(f"  removal curves: retraining without the top k of {name}", progress)
        curves.append(_curve(fit_, name, [order], scores, ks_arr, X_val, y_val, X_test, y_test, f0, mask))
    if random_orders:
        progress_line("  removal curves: retraining without random points", progress)
        curves.append(_curve(fit_, "random", random_orders, None, ks_arr, X_val, y_val, X_test, y_test, f0,
                             mask))
    return curves


def _curve(fit_: Fit, name: str, orders: list[Any], scores: Array | None, ks: NDArray[np.int64],
           X_val: Any, y_val: Any, X_test: Any, y_test: Any, f0: float, mask: Any) -> RemovalCurve:
    """Retrain without the top k of every order (one block), averaging the metrics over the orders."""
    problem = fit_.problem
    # One replay per removal (bit for bit the recorded run at k = 0): a block replay (replay_final) agrees
    # only to rounding, which a run that has not settled (a step map with spectral radius > 1) amplifies.
    thetas = [retrain_without(fit_, order[:k]) if k else fit_.theta_final for order in orders for k in ks]
    metrics = np.array([[accuracy(problem, t, X_test, y_test), mean_loss(problem, t, X_test, y_test),
                         mean_loss(problem, t, X_val, y_val) - f0] for t in thetas])
    metrics = metrics.reshape(len(orders), len(ks), 3).mean(axis=0)
    predicted = np.full(len(ks), np.nan)
    if scores is not None:
        predicted = np.array([-float(scores[orders[0][:k]].sum()) for k in ks])
    flipped = np.full(len(ks), np.nan)
    if mask is not None:
        flipped = np.mean([[float(mask[order[:k]].sum()) for k in ks] for order in orders], axis=0)
    return RemovalCurve(name, ks, metrics[:, 0], metrics[:, 1], metrics[:, 2], predicted, flipped)
