"""Per-coordinate weight decay r(θ) = ½ Σ_i λ_i θ_i² (e.g. no decay on biases, as most training recipes
do): the step, the residual's Jacobian, the closed form and every trajectory method use diag(λ) in place
of λI — checked against autograd, re-solved roots and replays in both modes; runs round-trip files."""

import autograd
import numpy as np
import pytest

import refsam
from refsam.influence import linearise
from refsam.tolerances import (
    RTOL_CLOSED_FORM_FD,
    RTOL_EXACT_METHODS,
    RTOL_JACOBIAN,
    RTOL_STEP,
    RTOL_TRAJECTORY_FD,
    rel_err,
)
from refsam.training import descent_direction

MODELS = {"logistic": lambda: refsam.LogisticRegression(), "softmax": lambda: refsam.SoftmaxRegression(3),
          "mlp": lambda: refsam.MLP((3, 4, 3), "tanh")}


def _problem(name, regularization="decoupled", n=14, seed=3):
    model = MODELS[name]()
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=3, n_classes=model.n_classes, seed=seed)
    lam = np.random.default_rng(seed).uniform(0.01, 0.2, model.n_params(3))
    return refsam.Problem(model, X[:n], y[:n], weight_decay=lam, regularization=regularization,
                          decay_biases=False), X[n:], y[n:]


def test_decay_biases_false_zeroes_exactly_the_bias_coordinates():
    problem, _, _ = _problem("mlp")
    mask = problem.model.bias_mask(3)
    assert problem.per_coordinate_decay and np.all(problem.weight_decay[mask] == 0)
    assert np.all(problem.weight_decay[~mask] > 0)
    scalar = refsam.Problem(refsam.LogisticRegression(), np.eye(3), [0, 1, 0], 0.1, decay_biases=False)
    np.testing.assert_array_equal(scalar.weight_decay, [0.1, 0.1, 0.1, 0.0])
    theta = np.arange(4.0)
    assert scalar.regularizer(theta) == pytest.approx(0.5 * 0.1 * (0 + 1 + 4))


@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_the_step_and_the_residual_jacobian_use_the_per_coordinate_decay(regularization):
    problem, _, _ = _problem("softmax", regularization)
    sam = refsam.SAM(0.1, "asam")
    theta = problem.init_params(0) + 0.3
    lam = problem.weight_decay

    def direction(t):  # the SAM direction written with autograd from the objective and the regulariser
        r = autograd.grad(problem.regularizer)
        g = autograd.grad(problem.objective)(t) + (r(t) if regularization == "coupled" else 0.0)
        w_hat = t + sam.perturbation(t, g)
        decay = r(w_hat) if regularization == "coupled" else lam * t
        return autograd.grad(problem.objective)(w_hat) + decay

    assert rel_err(descent_direction(problem, sam, theta).direction, direction(theta)) <= RTOL_STEP
    jacobian = autograd.jacobian(direction)(theta)
    assert rel_err(linearise(problem, sam, theta).jacobian, jacobian) <= RTOL_JACOBIAN


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_trajectory_methods_agree_with_autodiff_and_replays(name, regularization):
    problem, X_test, y_test = _problem(name, regularization)
    run = refsam.train(problem, refsam.SAM(0.1), 0.2, 8, batch_size=5, seed=1, momentum=0.9, nesterov=True)
    exact = {m: refsam.trajectory_influence(problem, run, X_test, y_test, method=m)
             for m in ("adjoint", "forward", "autodiff")}
    assert rel_err(exact["adjoint"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["forward"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["adjoint"], refsam.finite_difference_replay(problem, run, X_test, y_test)) <= \
        RTOL_TRAJECTORY_FD
    same_scalar = refsam.Problem(problem.model, problem.X, problem.y, float(problem.weight_decay.max()),
                                 regularization=regularization)
    other = refsam.train(same_scalar, refsam.SAM(0.1), 0.2, 8, batch_size=5, seed=1, momentum=0.9,
                         nesterov=True)
    assert np.max(np.abs(other.theta_final - run.theta_final)) > 1e-6  # the per-coordinate λ is used


def test_the_closed_form_equals_re_solved_differences_with_per_coordinate_decay():
    problem, X_test, y_test = _problem("logistic", n=30, seed=6)
    sam = refsam.SAM(0.05)
    root = refsam.solve_fixed_point(problem, sam, refsam.train(problem, sam, 0.5, 200).theta_final, lr=0.5)
    indices = np.array([0, 13, 29])
    expected = refsam.finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    for variant in ("full", "frozen", "erm"):  # every variant's J uses diag(λ)
        influence = refsam.hessian_influence(problem, sam, root, X_test, y_test, variant=variant)
        assert np.all(np.isfinite(influence))
    assert rel_err(refsam.hessian_influence(problem, sam, root, X_test, y_test)[indices], expected) <= \
        RTOL_CLOSED_FORM_FD
    with pytest.raises(ValueError, match="one scalar λ; `problem` has a per-coordinate weight decay"):
        refsam.hyperparameter_sensitivity(problem, sam, root)


def test_a_per_coordinate_run_round_trips_its_file_and_checks_its_problem(tmp_path):
    problem, _, _ = _problem("logistic")
    run = refsam.train(problem, refsam.SAM(0.1), 0.3, 4)
    run.save(tmp_path / "run.npz")
    loaded = refsam.Trajectory.load(tmp_path / "run.npz")
    np.testing.assert_array_equal(refsam.replay(problem, loaded).thetas, run.thetas)
    scalar = refsam.Problem(problem.model, problem.X, problem.y, 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        refsam.replay(scalar, loaded)


@pytest.mark.parametrize(("weight_decay", "message"), [
    (np.ones(3), r"`weight_decay` must have shape \(4\), got \(3,\)"),
    (np.array([0.1, -0.1, 0.0, 0.0]), r"`weight_decay` entries must be >= 0, got minimum -0.1"),
    (np.array([0.1, np.nan, 0.0, 0.0]), r"`weight_decay` must contain only finite values"),
])
def test_a_bad_per_coordinate_decay_is_rejected_by_name(weight_decay, message):
    with pytest.raises(ValueError, match=message):
        refsam.Problem(refsam.LogisticRegression(), np.eye(3), [0, 1, 0], weight_decay)
