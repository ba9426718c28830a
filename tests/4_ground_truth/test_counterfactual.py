"""Counterfactual replays (contract §5): the ground truth the trajectory influence is measured against.

Oracles: autograd through an independent re-implementation of the training loop (finite differences
must agree with it to ≤ 1e-5); retraining from scratch on the data with the point removed (a full-batch
leave-one-out replay is exactly that run, up to rescaling η and λ); and metamorphic properties.
"""

import numpy as np
import pytest

import refsam
from refsam.ground_truth.replay import finite_difference_replay, leave_one_out_replay
from refsam.influence.trajectory import trajectory_influence
from refsam.tolerances import RTOL_REORDERED, RTOL_RESCALED_RUN, RTOL_TRAJECTORY_FD, rel_err

LAMBDA = 0.05


def _run(rule="sam", regularization="decoupled", batch_size=None, steps=15, n=12, weights=None, seed=4):
    """A recorded run; λ = 0.05 is SGD's weight decay ("decoupled") or the loss's l2 ("coupled")."""
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=3, n_classes=3, seed=seed)
    coupled = regularization == "coupled"
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X[:n], y[:n], weights=weights,
                             l2=LAMBDA if coupled else 0.0)
    optimizer = refsam.SGD(0.4, weight_decay=0.0 if coupled else LAMBDA)
    trajectory = refsam.train(problem, refsam.SAM(0.1, rule), optimizer, steps, batch_size=batch_size,
                              seed=seed)
    return problem, trajectory, X[n:], y[n:]


@pytest.mark.parametrize("rule,regularization,batch_size", [
    ("sam", "decoupled", None), ("asam", "coupled", 5), ("usam", "decoupled", 7),
])
def test_finite_differences_equal_autograd_through_training(rule, regularization, batch_size):
    problem, trajectory, X_test, y_test = _run(rule, regularization, batch_size)
    autodiff = trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")
    fd = finite_difference_replay(problem, trajectory, X_test, y_test)
    assert fd.shape == (problem.n, len(y_test))
    assert np.ptp(fd, axis=0).max() > 1e-6  # not constant across training points
    assert rel_err(fd, autodiff) <= RTOL_TRAJECTORY_FD


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_full_batch_leave_one_out_is_retraining_without_the_point(rule, regularization):
    """With w_j = 0, F = (1/n) Σ_{i≠j} ℓ_i = s F_reduced, s = (n−1)/n. Retraining on the n−1 remaining
    points with η' = s η, λ' = λ/s (and ρ' = s ρ for USAM, whose ε scales with g) is the same run."""
    problem, trajectory, X_test, y_test = _run(rule, regularization)
    n, s = problem.n, (problem.n - 1) / problem.n
    sam = trajectory.sam()
    rho = sam.rho * s if rule == "usam" else sam.rho
    indices = np.array([0, 5, 11])
    loo = leave_one_out_replay(problem, trajectory, X_test, y_test, indices=indices)
    base = problem.model.losses(trajectory.theta_final, X_test, y_test)
    for row, j in enumerate(indices):
        keep = np.arange(n) != j
        coupled = regularization == "coupled"
        reduced = refsam.Problem(problem.model, problem.X[keep], problem.y[keep],
                                 l2=LAMBDA / s if coupled else 0.0)
        optimizer = refsam.SGD(s * trajectory.lrs, weight_decay=0.0 if coupled else LAMBDA / s)
        retrained = refsam.train(reduced, refsam.SAM(rho, rule), optimizer, trajectory.steps,
                                 theta0=trajectory.theta0)
        expected = problem.model.losses(retrained.theta_final, X_test, y_test) - base
        assert np.max(np.abs(expected)) > 1e-6
        assert rel_err(loo[row], expected) <= RTOL_RESCALED_RUN


def test_removing_a_point_of_weight_zero_changes_nothing():
    weights = np.ones(12)
    weights[3] = 0.0
    problem, trajectory, X_test, y_test = _run(batch_size=5, weights=weights)
    loo = leave_one_out_replay(problem, trajectory, X_test, y_test, indices=[3, 4])
    # w_3 is already 0: removing it leaves w unchanged, and the row is exactly 0 (refsam does not replay
    # it: a (d, K) block replay rounds differently from the recorded run, by an ulp, on this numpy)
    np.testing.assert_array_equal(loo[0], 0.0)
    assert np.max(np.abs(loo[1])) > 1e-6


def test_subsets_are_rows_and_first_order_agreement():
    """indices select rows; LOO and −FD agree to first order (removal is a unit step in w_j)."""
    problem, trajectory, X_test, y_test = _run(batch_size=5, n=20)
    fd = finite_difference_replay(problem, trajectory, X_test, y_test)
    loo = leave_one_out_replay(problem, trajectory, X_test, y_test)
    rows = np.array([7, 2])
    # Rows are replayed in blocks (one matrix product for a block's runs), so a row computed in another
    # block differs by the rounding of a product with more columns: RTOL_REORDERED, not bit for bit.
    assert rel_err(finite_difference_replay(problem, trajectory, X_test, y_test, indices=rows),
                   fd[rows]) <= RTOL_REORDERED
    assert rel_err(leave_one_out_replay(problem, trajectory, X_test, y_test, indices=rows),
                   loo[rows]) <= RTOL_REORDERED
    assert np.corrcoef(-fd.ravel(), loo.ravel())[0, 1] > 0.95
    coarse = finite_difference_replay(problem, trajectory, X_test, y_test, h=2e-4)
    assert rel_err(coarse, fd) <= RTOL_TRAJECTORY_FD  # h-independence: the difference quotient has converged


def test_bad_inputs_raise_with_pinned_messages(capsys):
    problem, trajectory, X_test, y_test = _run(steps=3)
    with pytest.raises(ValueError, match=r"`indices` must lie in 0..11, got values in 0..12"):
        leave_one_out_replay(problem, trajectory, X_test, y_test, indices=[0, 12])
    with pytest.raises(ValueError, match=r"`indices` must be a non-empty 1-d array of ints"):
        finite_difference_replay(problem, trajectory, X_test, y_test, indices=[0.5])
    with pytest.raises(ValueError, match=r"`h` must be a finite number > 0, got -0.001"):
        finite_difference_replay(problem, trajectory, X_test, y_test, h=-1e-3)
    other = problem.with_weights(None)
    other = refsam.Problem(other.model, other.X, other.y, l2=LAMBDA)  # λ moved into the loss ("coupled")
    with pytest.raises(ValueError, match=r"`problem` does not match the trajectory: l2 0.05 != recorded 0.0"):
        leave_one_out_replay(other, trajectory, X_test, y_test)
    with pytest.raises(ValueError, match=r"`X_test` must have shape \(m >= 1, 3\)"):
        leave_one_out_replay(problem, trajectory, X_test[:0], y_test[:0])
    leave_one_out_replay(problem, trajectory, X_test, y_test, indices=[1, 2], progress=True)
    assert "leave-one-out: replayed 2/2 points" in capsys.readouterr().err
