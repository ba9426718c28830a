"""The re-solving ground truth (contract §5): finite differences and leave-one-out of the SAM root.

Oracles independent of refsam's root finder: scipy.optimize.minimize on the weighted ERM objective
(ρ = 0), Koh–Liang with autograd Hessians (ρ = 0), and long SAM training runs with w_j = 0.
"""

import dataclasses

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.optimize

import refsam
import refsam.ground_truth.resolve as resolve
from refsam.ground_truth.resolve import (
    finite_difference_influence,
    finite_difference_parameters,
    leave_one_out,
)
from refsam.influence.fixed_point import FixedPointError, solve_fixed_point
from refsam.tolerances import RTOL_CLOSED_FORM_FD, RTOL_REFIT, RTOL_REORDERED, rel_err

NEWTON_POLISH_STEPS = 5  # from BFGS's answer, quadratic convergence reaches round-off in 2-3 steps
LAMBDA = 0.05  # the weight decay: SGD's (0.1's "decoupled" default)
ETA = 0.5  # the training rate (the roots' stability diagnostic only)
OPTIMIZER = refsam.SGD(ETA, weight_decay=LAMBDA)


@pytest.fixture(scope="module")
def logistic():
    X, y, _ = refsam.make_gaussian_classification(n=60, n_features=3, seed=4)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=7, n_features=3, seed=5)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)  # λ is the optimizer's
    return problem, X_test, y_test


def test_leave_one_out_at_rho_zero_equals_an_independent_refit(logistic):
    """ρ = 0: the re-solved root is argmin (1/n) Σ_{i≠j} ℓ_i + (λ/2)‖θ‖² (note 1/n: w_j = 0, n fixed)."""
    problem, X_test, y_test = logistic
    gd = refsam.SAM(0.0)
    root = solve_fixed_point(problem, gd, np.zeros(problem.d), optimizer=OPTIMIZER)
    indices = np.array([0, 13, 59])
    actual = leave_one_out(problem, gd, root, X_test, y_test, indices)

    def refit(weights):
        def objective(t):
            return problem.objective(t, None, weights) + 0.5 * LAMBDA * anp.dot(t, t)
        # BFGS, then Newton steps with autograd's gradient and Hessian: SciPy's minimisers alone stop
        # at ‖∇‖ ~ 1e-12..1e-9 ("precision loss"), which left the oracle, not refsam, 3e-7 off.
        grad, hess = autograd.grad(objective), autograd.hessian(objective)
        theta = scipy.optimize.minimize(objective, np.zeros(problem.d), jac=grad, method="BFGS").x
        for _ in range(NEWTON_POLISH_STEPS):
            theta = theta - np.linalg.solve(hess(theta), grad(theta))
        return theta

    base = problem.model.losses(refit(np.ones(problem.n)), X_test, y_test)
    for row, j in enumerate(indices):
        weights = np.ones(problem.n)
        weights[j] = 0.0
        expected = problem.model.losses(refit(weights), X_test, y_test) - base
        assert rel_err(actual[row], expected) <= RTOL_REFIT
    assert np.min(np.abs(actual)) > 0  # removals change every test loss


def test_leave_one_out_under_sam_equals_training_to_convergence_without_the_point(logistic):
    """Decoupled SAM at a stable root: a long full-batch run with w_j = 0 lands on the re-solved root."""
    problem, X_test, y_test = logistic
    sam = refsam.SAM(0.05, "sam")
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER)  # η = 0.5
    assert root.stable
    indices = np.array([2, 31])
    actual = leave_one_out(problem, sam, root, X_test, y_test, indices)
    base = problem.model.losses(refsam.train(problem, sam, OPTIMIZER, steps=3000).theta_final, X_test, y_test)
    for row, j in enumerate(indices):
        weights = np.ones(problem.n)
        weights[j] = 0.0
        run = refsam.train(problem.with_weights(weights), sam, OPTIMIZER, steps=3000)
        expected = problem.model.losses(run.theta_final, X_test, y_test) - base
        assert rel_err(actual[row], expected) <= 1e-8


def test_finite_differences_at_rho_zero_equal_koh_liang(logistic):
    problem, X_test, y_test = logistic
    gd = refsam.SAM(0.0)
    root = solve_fixed_point(problem, gd, np.zeros(problem.d), optimizer=OPTIMIZER).theta
    H = autograd.hessian(lambda t: problem.objective(t))(root) + LAMBDA * np.eye(problem.d)
    train_grads = autograd.jacobian(lambda t: problem.losses(t))(root)  # (n, d)
    test_grads = autograd.jacobian(lambda t: problem.model.losses(t, X_test, y_test))(root)  # (m, d)
    d_theta = -np.linalg.solve(H, train_grads.T).T / problem.n  # (n, d)
    indices = np.array([4, 8])
    fd_theta = finite_difference_parameters(problem, gd, root, indices, optimizer=OPTIMIZER)
    assert rel_err(fd_theta, d_theta[indices]) <= RTOL_CLOSED_FORM_FD
    fd = finite_difference_influence(problem, gd, root, X_test, y_test, indices, optimizer=OPTIMIZER)
    assert rel_err(fd, (d_theta @ test_grads.T)[indices]) <= RTOL_CLOSED_FORM_FD


def test_any_subset_of_indices_gives_the_matching_rows(logistic):
    problem, X_test, y_test = logistic
    sam = refsam.SAM(0.05, "asam")
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER)  # carries it
    full = finite_difference_influence(problem, sam, root, X_test, y_test)
    assert full.shape == (problem.n, len(y_test))
    subset = np.array([17, 3, 17])
    np.testing.assert_array_equal(finite_difference_influence(problem, sam, root, X_test, y_test, subset),
                                  full[subset])
    loo = leave_one_out(problem, sam, root, X_test, y_test)
    # the re-solves of a chunk advance as one block (resolve_block): another set of indices makes other
    # blocks, whose matrix products round differently (4e-16 here), so RTOL_REORDERED, not bit for bit
    assert rel_err(leave_one_out(problem, sam, root, X_test, y_test, subset), loo[subset]) <= RTOL_REORDERED
    # removal (Δw_j = −1) and the derivative agree in sign and roughly in size for most entries
    assert np.mean(np.sign(loo) == -np.sign(full)) > 0.95


def test_starting_point_is_polished_so_a_slightly_off_root_gives_the_same_answer(logistic):
    problem, X_test, y_test = logistic
    sam = refsam.SAM(0.05, "sam")
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER).theta
    indices = np.array([1, 2])
    exact = leave_one_out(problem, sam, root, X_test, y_test, indices, optimizer=OPTIMIZER)
    nearby = leave_one_out(problem, sam, root + 1e-7, X_test, y_test, indices, optimizer=OPTIMIZER)
    assert rel_err(nearby, exact) <= 1e-9


def test_a_failed_re_solve_names_the_training_point(logistic, monkeypatch):
    problem, X_test, y_test = logistic
    sam = refsam.SAM(0.05, "sam")
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER).theta
    real = resolve.solve_fixed_point

    def failing_when_a_weight_is_zero(problem, sam, theta0, weights=None, **kwargs):
        if weights is not None and np.any(weights == 0):
            raise FixedPointError("no root of G", residual=0.5, reason="test")
        return real(problem, sam, theta0, weights=weights, **kwargs)

    monkeypatch.setattr(resolve, "solve_fixed_point", failing_when_a_weight_is_zero)
    monkeypatch.setattr(resolve, "CHORD_MAX_STEPS", 0)  # the block chord gives up: each point alone
    with pytest.raises(FixedPointError, match=r"re-solving the root with w_9 = 0 failed: no root") as info:
        leave_one_out(problem, sam, root, X_test, y_test, [9], optimizer=OPTIMIZER)
    assert info.value.residual == 0.5


@pytest.mark.parametrize("rule, regularization", [("sam", "decoupled"), ("asam", "decoupled"),
                                                  ("usam", "coupled")])  # (coupled SAM: no root here)
def test_block_re_solves_equal_lone_newton_re_solves(logistic, rule, regularization):
    """resolve_block (the chord method on K weight vectors at once) against solve_fixed_point on each
    vector alone: the same roots to rounding, for leave-one-out, finite-difference and far-off weights
    (every point's weight doubled: the chord cannot reach that root and hands it to Newton)."""
    base, _, _ = logistic
    coupled = regularization == "coupled"  # λ in the loss (l2) and an SGD without weight decay
    problem = refsam.Problem(base.model, base.X, base.y, l2=LAMBDA if coupled else 0.0)
    optimizer = refsam.SGD(ETA, weight_decay=0.0 if coupled else LAMBDA)
    sam = refsam.SAM(0.05, rule)
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=optimizer, tol=1e-13).theta
    weights = np.ones((6, problem.n))
    weights[0, 3] = weights[1, 40] = 0.0
    weights[2, 7], weights[3, 7] = 1.0 + 1e-4, 1.0 - 1e-4
    weights[4, :30] = 0.0  # half the data removed
    weights[5] *= 2.0 + np.arange(problem.n) % 3  # far off
    block = resolve.resolve_block(problem, sam, optimizer, root, weights, list(range(6)))
    for k in range(6):
        alone = solve_fixed_point(problem, sam, root, optimizer=optimizer, tol=1e-12,
                                  weights=weights[k]).theta
        # both stop at the rounding floor of θ (a finite-difference root moves only ~1e-6 from θ̂, so
        # relative to that move the rounding of θ itself is ~1e-10: the bound is on θ)
        assert np.linalg.norm(block[k] - alone) <= 1e-13 * np.linalg.norm(alone), k
        assert np.linalg.norm(refsam.residual_map(problem, sam, block[k], weights[k],
                                                  optimizer=optimizer)) <= 1e-12


def test_a_column_the_chord_leaves_unfinished_is_re_solved_by_newton(logistic, monkeypatch):
    problem, _, _ = logistic
    sam = refsam.SAM(0.05)
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER).theta
    weights = np.ones((2, problem.n))
    weights[:, 5] = 0.0
    chord = resolve.resolve_block(problem, sam, OPTIMIZER, root, weights, [5, 5])
    calls = []
    real = resolve.solve_fixed_point
    monkeypatch.setattr(resolve, "solve_fixed_point", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(resolve, "CHORD_MAX_STEPS", 1)  # one chord step: not yet below RESOLVE_TOL
    newton = resolve.resolve_block(problem, sam, OPTIMIZER, root, weights, [5, 5])
    assert len(calls) == 2
    assert np.linalg.norm(newton - chord) <= 1e-13 * np.linalg.norm(chord)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"indices": [60]}, r"`indices` must lie in 0..59, got values in 60..60"),
    ({"indices": []}, r"`indices` must be a non-empty 1-d array of ints"),
    ({"indices": [0.5]}, r"`indices` must be a non-empty 1-d array of ints"),
    ({"h": 0.0}, r"`h` must be a finite number > 0, got 0.0"),
    ({"theta_hat": np.zeros(2)}, r"`theta_hat` must have shape \(4\), got \(2,\)"),
])
def test_invalid_arguments_name_argument_expected_and_got(logistic, kwargs, message):
    problem, X_test, y_test = logistic
    args = {"theta_hat": np.zeros(problem.d), **kwargs}
    with pytest.raises(ValueError, match=message):
        finite_difference_influence(problem, refsam.SAM(0.0), X_test=X_test, y_test=y_test,
                                    optimizer=OPTIMIZER, **args)


def test_a_singular_jacobian_at_the_root_sends_every_column_to_newton(logistic, monkeypatch):
    problem, _, _ = logistic
    sam = refsam.SAM(0.05)
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER).theta
    weights = np.ones((3, problem.n))
    weights[np.arange(3), [1, 2, 3]] = 0.0
    chord = resolve.resolve_block(problem, sam, OPTIMIZER, root, weights, [1, 2, 3])
    real_factorise, real_solve = resolve.factorise, resolve.solve_fixed_point
    calls = []
    monkeypatch.setattr(resolve, "factorise", lambda J: dataclasses.replace(real_factorise(J), singular=True))
    monkeypatch.setattr(resolve, "solve_fixed_point", lambda *a, **k: calls.append(1) or real_solve(*a, **k))
    newton = resolve.resolve_block(problem, sam, OPTIMIZER, root, weights, [1, 2, 3])
    assert len(calls) == 3
    assert np.linalg.norm(newton - chord) <= 1e-13 * np.linalg.norm(chord)


def test_block_re_solves_never_hand_the_shared_pivots_to_scipy(logistic, monkeypatch):
    """scipy's lu_solve shifts the pivot array to 1-based and back in place, so threads solving with
    one shared LU corrupt each other's solves (measured: every solve wrong, then a heap corruption,
    scipy 1.17). The LU of J̄ is computed once per call and shared by the chunks, so each block must
    solve with its own copy of the pivots."""
    problem, _, _ = logistic
    sam = refsam.SAM(0.05)
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=OPTIMIZER).theta
    factors = resolve.root_factors(problem, sam, OPTIMIZER, root)
    seen = []
    real = resolve.scipy.linalg.lu_solve
    monkeypatch.setattr(resolve.scipy.linalg, "lu_solve",
                        lambda lu, b, **k: seen.append(lu[1] is factors.lu[1]) or real(lu, b, **k))
    weights = np.ones((2, problem.n))
    weights[[0, 1], [4, 8]] = 0.0
    resolve.resolve_block(problem, sam, OPTIMIZER, root, weights, [4, 8], factors)
    assert seen and not any(seen)
