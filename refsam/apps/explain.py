"""Explaining one prediction: the training points that most support and oppose it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..validation import check_finite_array, check_positive_int
from .fitting import Fit, check_fit, influence, resolve_method

__all__ = ["Explanation", "explain_prediction"]


@dataclass
class Explanation:
    """The training points that most support (proponents) and oppose (opponents) a test prediction.

    ``influence[j] = I_j(ℓ(z_test))``. Proponents have the most negative influence (up-weighting them
    lowers the test loss; removing them would raise it); opponents the most positive.
    """

    method: str
    influence: NDArray[np.float64]  # (n,)
    proponents: NDArray[np.int64]  # (k,) indices, strongest first
    opponents: NDArray[np.int64]  # (k,) indices, strongest first


def explain_prediction(fit_: Fit, x: ArrayLike, y: int, k: int = 5,
                       method: str = "closed_form") -> Explanation:
    """Proponents and opponents of the prediction at test point (x, y) under ``method``.

    Parameters
    ----------
    fit_ : Fit
        The fitted model (`refsam.apps.fitting.fit`).
    x : array (p,)
        The test input.
    y : int
        Its label (the loss ℓ(z_test) is measured at this label).
    k : int
        How many of each to return.
    method : str
        A method of `refsam.influence.methods.METHODS`.
    """
    check_fit(fit_)
    problem = fit_.problem
    k = check_positive_int("k", k)
    x = check_finite_array("x", x, shape=(problem.p,))
    name = resolve_method(method).name
    inf = influence(fit_, name, x[None, :], np.array([y]), progress=False)[:, 0]  # (n,)
    order = np.argsort(inf, kind="stable")
    k = min(k, problem.n)
    return Explanation(name, inf, order[:k], order[::-1][:k])


