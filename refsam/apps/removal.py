"""Data removal: remove the training points most harmful to a validation loss, retrain, compare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..objective import Problem
from ..training import replay
from ..validation import check_positive_int, check_random_state
from .fitting import Fit, check_fit, influence, progress_line, resolve_method

__all__ = ["RemovalResult", "mean_loss", "remove_harmful", "retrain_without"]

Array = NDArray[np.float64]


def mean_loss(problem: Problem, theta: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
    """f(θ) = (1/m) Σ_k ℓ(z_k, θ), the mean loss on (X, y)."""
    return float(np.mean(problem.model.losses(theta, X, y)))


def retrain_without(fit_: Fit, removed: ArrayLike) -> Array:
    """θ_T of the same run (init, batches, learning rates, rule) with w_j = 0 for j in ``removed``."""
    check_fit(fit_)
    weights = fit_.problem.weights.copy()
    weights[np.asarray(removed, dtype=np.int64)] = 0.0
    return replay(fit_.problem, fit_.trajectory, weights=weights).theta_final


@dataclass
class RemovalResult:
    """Removing ``removed`` from training: predicted and actual change of the validation loss."""

    method: str
    removed: NDArray[np.int64]  # (k,) training indices
    predicted_change: float  # −Σ_{j∈S} I_j(f); nan for random removal
    actual_change: float  # f(θ_T without S) − f(θ_T)


def remove_harmful(fit_: Fit, X_val: ArrayLike, y_val: ArrayLike, k: int, methods: Any = None,
                   n_random: int = 3, seed: object = 0, progress: bool = False) -> list[RemovalResult]:
    """Remove the k training points most harmful to the mean validation loss f, per method, retrain
    with the same procedure (w_j = 0), and compare the actual change of f with the prediction.

    The most harmful points have the largest ``I_j(f)`` (up-weighting them raises f), so the linear
    prediction of removing the set S is ``Δf ≈ −Σ_{j∈S} I_j(f)`` (negative: f should fall). ``n_random``
    random sets of k points give the reference ("random" rows, no prediction).
    """
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
        inf_f = influence(fit_, method, X_val, y_val).mean(axis=1)  # I_j(f), (n,)
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


