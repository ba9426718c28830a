"""Seeded synthetic data and label noise (the data layer). Everything here is offline and deterministic."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..validation import check_nonnegative, check_positive_int, check_random_state

__all__ = ["flip_labels", "make_gaussian_classification"]


def flip_labels(y: ArrayLike, n_classes: int, fraction: float, seed: object = 0
                ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Replace a fraction of the labels by a different class, chosen uniformly.

    Returns ``(y_noisy, flipped)``: int64 (n,) labels and the bool (n,) mask of flipped entries.
    Exactly ``round(fraction * n)`` labels change.
    """
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    n_classes = check_positive_int("n_classes", n_classes, minimum=2)
    fraction = check_nonnegative("fraction", fraction)
    if fraction > 1:
        raise InvalidInputError(f"`fraction` must lie in [0, 1], got {fraction}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InvalidInputError(f"`y` labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    rng = check_random_state(seed)
    n = y.shape[0]
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
    shift = rng.integers(1, n_classes, size=n)  # a different class, uniformly
    y_noisy = y.copy()
    y_noisy[flipped] = (y[flipped] + shift[flipped]) % n_classes
    return y_noisy, flipped




def make_gaussian_classification(n: int = 200, n_features: int = 5, n_classes: int = 2,
                                 separation: float = 1.0, flip_fraction: float = 0.0, seed: object = 0
                                 ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_]]:
    """Gaussian class clusters with optional label noise.

    Class k has mean ``separation * m_k`` with m_k ~ N(0, I) drawn once, and identity covariance.
    A fraction ``flip_fraction`` of labels is replaced by a different class chosen uniformly.

    Returns
    -------
    X : array (n, n_features)
    y : int array (n,)            possibly noisy labels
    flipped : bool array (n,)     True where the label was flipped
    """
    n = check_positive_int("n", n)
    n_features = check_positive_int("n_features", n_features)
    n_classes = check_positive_int("n_classes", n_classes, minimum=2)
    separation = check_nonnegative("separation", separation)
    flip_fraction = check_nonnegative("flip_fraction", flip_fraction)
    if flip_fraction > 1:
        raise InvalidInputError(f"`flip_fraction` must lie in [0, 1], got {flip_fraction}")
    rng = check_random_state(seed)
    means = separation * rng.standard_normal((n_classes, n_features))  # (K, p)
    y_true = rng.integers(0, n_classes, size=n)
    X = means[y_true] + rng.standard_normal((n, n_features))  # (n, p)
    y, flipped = flip_labels(y_true, n_classes, flip_fraction, seed=rng)
    return X, y, flipped
