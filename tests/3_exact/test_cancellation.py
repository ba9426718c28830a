"""A batch gradient that is round-off-level cancellation of its terms makes ε's direction a product of
rounding; the trajectory methods say so instead of returning numbers that disagree silently."""

import warnings

import numpy as np
import pytest

import refsam
from refsam.tolerances import CANCEL_WARN


def _run(third_weight):
    # Samples 0 and 1 share x and have opposite labels: at θ = 0 their gradients cancel exactly, and
    # sample 2's weight sets how much of g is left: ‖g‖/‖terms‖ ≈ third_weight.
    X = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]])
    y = np.array([0, 1, 1])
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weights=[1.0, 1.0, third_weight])
    trajectory = refsam.train(problem, refsam.SAM(0.05, "sam"), 0.1, 2, theta0=np.zeros(3))
    return problem, trajectory, X[:1], y[:1]


@pytest.mark.parametrize("method", ["adjoint", "forward"])
def test_a_cancelled_gradient_warns(method):
    problem, trajectory, X_test, y_test = _run(1e-12)
    with pytest.warns(RuntimeWarning, match=r"\d\.\de-1\d of the size of the per-sample terms"):
        refsam.trajectory_influence(problem, trajectory, X_test, y_test, method=method)


def test_an_ordinary_small_gradient_does_not_warn():
    problem, trajectory, X_test, y_test = _run(10 * CANCEL_WARN)  # small, but far above round-off
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = refsam.trajectory_influence(problem, trajectory, X_test, y_test)
    assert np.all(np.isfinite(scores))
