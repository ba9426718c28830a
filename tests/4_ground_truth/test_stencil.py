"""The weight finite-difference stencil: weights below h (one-sided, second order) and steps too small
to mean anything (refused). 0.1 formed w_j − h < 0 and failed for any weight below h, and returned
zeros for h = 1e-300."""

import autograd
import numpy as np
import pytest

import refsam
from refsam.errors import InvalidInputError
from refsam.ground_truth import finite_difference_parameters, finite_difference_replay
from refsam.ground_truth.stencil import weight_stencil
from refsam.influence.trajectory import trajectory_influence
from refsam.tolerances import RTOL_CLOSED_FORM_FD, RTOL_TRAJECTORY_FD, rel_err

SMALL = np.array([0.0, 1e-7, 3e-5])  # all below the default h = 1e-4
LAMBDA = 0.05  # SGD's weight decay


def _problem(n=12):
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=3, n_classes=3, seed=4)
    weights = np.ones(n)
    weights[:3] = SMALL
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X[:n], y[:n], weights=weights)
    return problem, X[n:], y[n:]


def _sgd(lr=0.4):
    return refsam.SGD(lr, weight_decay=LAMBDA)


def test_stencil_is_exact_for_quadratics_on_both_sides_of_h():
    def F(w):
        return 3.0 * w[1] ** 2 - 2.0 * w[1] + 0.5 * w[0]
    for w1 in (0.0, 1e-6, 0.7):
        w0 = np.array([1.0, w1])
        vectors, coefficients = weight_stencil(w0, 1, 1e-3)
        assert all(np.all(v >= 0) for v in vectors)
        assert len(vectors) == (2 if w1 >= 1e-3 else 3)
        estimate = coefficients @ np.array([F(v) for v in vectors])
        assert abs(estimate - (6.0 * w1 - 2.0)) <= 1e-9


def test_replay_differences_at_weights_below_h_equal_autodiff():
    problem, X_test, y_test = _problem()
    trajectory = refsam.train(problem, refsam.SAM(0.1), _sgd(), 15, batch_size=5, seed=4)
    fd = finite_difference_replay(problem, trajectory, X_test, y_test, indices=np.arange(5))
    autodiff = trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")[:5]
    assert np.max(np.abs(fd[:3])) > 1e-4  # the small-weight points do move the run
    assert rel_err(fd, autodiff) <= RTOL_TRAJECTORY_FD


def test_resolve_differences_at_weights_below_h_equal_koh_liang():
    """ρ = 0: dθ̂/dw_j = −H⁻¹∇ℓ_j/n, H the autograd Hessian of the weighted objective."""
    problem, _, _ = _problem(n=40)
    gd = refsam.SAM(0.0)
    root = refsam.solve_fixed_point(problem, gd, np.zeros(problem.d), optimizer=_sgd()).theta
    H = autograd.hessian(problem.objective)(root) + LAMBDA * np.eye(problem.d)
    grads = autograd.jacobian(lambda t: problem.model.losses(t, problem.X, problem.y))(root)  # (n, d)
    expected = -np.linalg.solve(H, grads[:5].T).T / problem.n
    fd = finite_difference_parameters(problem, gd, root, indices=np.arange(5), optimizer=_sgd())
    assert rel_err(fd, expected) <= RTOL_CLOSED_FORM_FD


@pytest.mark.parametrize("h,weight,message", [
    (1e-300, 1.0, r"`h` = 1e-300 is too small .* h >= 1e-10"),
    (1e-11, 1.0, r"`h` = 1e-11 is too small"),
    (1e-9, 1e8, r"`h` = 1e-09 is below the resolution of the weight w_0 = 1e\+08"),
])
def test_meaningless_steps_are_refused(h, weight, message):
    problem, X_test, y_test = _problem()
    problem = problem.with_weights(np.full(problem.n, weight))
    trajectory = refsam.train(problem, refsam.SAM(0.1), _sgd(), 3, seed=4)
    with pytest.raises(InvalidInputError, match=message):
        finite_difference_replay(problem, trajectory, X_test, y_test, indices=[0], h=h)
