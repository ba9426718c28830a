"""Seeded synthetic datasets (the data layer). Everything here is offline and deterministic."""

from __future__ import annotations

import numpy as np

from ._validation import check_nonnegative, check_positive_int, check_random_state


def make_gaussian_classification(n: int = 200, n_features: int = 5, n_classes: int = 2,
                                 separation: float = 1.0, flip_fraction: float = 0.0, seed=0):
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
        raise ValueError(f"`flip_fraction` must lie in [0, 1], got {flip_fraction}")
    rng = check_random_state(seed)
    means = separation * rng.standard_normal((n_classes, n_features))  # (K, p)
    y_true = rng.integers(0, n_classes, size=n)
    X = means[y_true] + rng.standard_normal((n, n_features))  # (n, p)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=int(round(flip_fraction * n)), replace=False)] = True
    y = y_true.copy()
    shift = rng.integers(1, n_classes, size=n)  # a different class, uniformly
    y[flipped] = (y_true[flipped] + shift[flipped]) % n_classes
    return X, y, flipped
