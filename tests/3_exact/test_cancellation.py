"""A batch gradient that is round-off-level cancellation of its terms makes ε's direction a product of
rounding; the trajectory methods say so instead of returning numbers that disagree silently."""

import warnings

import numpy as np
import pytest

import refsam
from refsam.tolerances import CANCEL_WARN


def _run(third_weight, norm_eps=0.0):
    # Samples 0 and 1 share x and have opposite labels: at θ = 0 their gradients cancel exactly, and
    # sample 2's weight sets how much of g is left: ‖g‖/‖terms‖ ≈ third_weight.
    X = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]])
    y = np.array([0, 1, 1])
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weights=[1.0, 1.0, third_weight])
    trajectory = refsam.train(problem, refsam.SAM(0.05, "sam", norm_eps=norm_eps), refsam.SGD(0.1), 2,
                              theta0=np.zeros(3))
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


def test_a_round_off_sized_norm_eps_still_warns_and_a_large_one_does_not():
    """ε = ρ g/(‖g‖ + e): the public implementations' e = 1e-12 is itself round-off-sized here and
    protects nothing (the fuzz suite found 16% disagreement at ‖g‖ ≈ e = 1e-16); e far above the
    rounding of g makes ε smooth in g and the exact methods agree."""
    problem, trajectory, X_test, y_test = _run(1e-14, norm_eps=1e-12)
    with pytest.warns(RuntimeWarning, match="of the size of the per-sample terms"):
        refsam.trajectory_influence(problem, trajectory, X_test, y_test)
    problem, trajectory, X_test, y_test = _run(1e-14, norm_eps=10 * CANCEL_WARN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adjoint = refsam.trajectory_influence(problem, trajectory, X_test, y_test)
    autodiff = refsam.trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")
    assert np.max(np.abs(adjoint - autodiff)) <= 1e-9 * np.max(np.abs(autodiff))
