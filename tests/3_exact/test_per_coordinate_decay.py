"""Per-coordinate weight decay r(θ) = ½ Σ_i λ_i θ_i² (e.g. no decay on biases, as most training recipes
do): the step, the residual's Jacobian, the closed form and every trajectory method use diag(λ) in place
of λI — checked against autograd, re-solved roots and replays in both modes; runs round-trip files.

0.1's ``Problem(weight_decay=λ, decay_biases=False)`` is ``λ_i = np.where(model.bias_mask(p), 0.0, λ)`` in
0.2, as the optimizer's weight decay (``SGD(weight_decay=λ_i)``, 0.1's "decoupled" mode) or as the loss's
L2 term (``Problem(l2=λ_i)``, 0.1's "coupled" mode)."""

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
from refsam.training import sam_gradient

MODELS = {"logistic": lambda: refsam.LogisticRegression(), "softmax": lambda: refsam.SoftmaxRegression(3),
          "mlp": lambda: refsam.MLP((3, 4, 3), "tanh")}


def _problem(name, regularization="decoupled", n=14, seed=3):
    """(problem, λ_i, X_test, y_test): λ_i random, 0 on the biases; in the loss for "coupled" (else the
    optimizer's: build it with :func:`_sgd`)."""
    model = MODELS[name]()
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=3, n_classes=model.n_classes, seed=seed)
    lam = np.random.default_rng(seed).uniform(0.01, 0.2, model.n_params(3))
    lam = np.where(model.bias_mask(3), 0.0, lam)  # 0.1's decay_biases=False
    problem = refsam.Problem(model, X[:n], y[:n], l2=lam if regularization == "coupled" else 0.0)
    return problem, lam, X[n:], y[n:]


def _sgd(lr, lam, regularization="decoupled", **kwargs):
    """The base optimizer: λ (per coordinate or not) is its weight decay in 0.1's "decoupled" mode."""
    return refsam.SGD(lr, weight_decay=lam if regularization == "decoupled" else 0.0, **kwargs)


def test_decay_biases_false_zeroes_exactly_the_bias_coordinates():
    """0.2's spelling of decay_biases=False, np.where(model.bias_mask(p), 0.0, λ), zeroes exactly the bias
    coordinates, and both homes of λ keep the array as given."""
    problem, lam, _, _ = _problem("mlp")
    mask = problem.model.bias_mask(3)
    assert np.all(lam[mask] == 0) and np.all(lam[~mask] > 0)
    coupled, _, _, _ = _problem("mlp", "coupled")
    np.testing.assert_array_equal(coupled.l2, lam)
    np.testing.assert_array_equal(_sgd(0.1, lam).weight_decay, lam)
    model = refsam.LogisticRegression()
    weights_only = np.where(model.bias_mask(3), 0.0, 0.1)
    np.testing.assert_array_equal(weights_only, [0.1, 0.1, 0.1, 0.0])
    scalar = refsam.Problem(model, np.eye(3), [0, 1, 0], l2=weights_only)
    theta = np.arange(4.0)
    assert scalar.regularizer(theta) == pytest.approx(0.5 * 0.1 * (0 + 1 + 4))
    with pytest.raises(TypeError, match="decay_biases"):  # the 0.1 keyword is gone, not ignored
        refsam.Problem(model, np.eye(3), [0, 1, 0], l2=0.1, decay_biases=False)


@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_the_step_and_the_residual_jacobian_use_the_per_coordinate_decay(regularization):
    problem, lam, _, _ = _problem("softmax", regularization)
    optimizer = _sgd(0.1, lam, regularization)
    sam = refsam.SAM(0.1, "asam")
    theta = problem.init_params(0) + 0.3

    def direction(t):  # the SAM direction written with autograd from the objective and the regulariser
        r = autograd.grad(problem.regularizer)
        g = autograd.grad(problem.objective)(t) + (r(t) if regularization == "coupled" else 0.0)
        w_hat = t + sam.perturbation(t, g)
        decay = r(w_hat) if regularization == "coupled" else lam * t
        return autograd.grad(problem.objective)(w_hat) + decay

    step = optimizer.residual(theta, sam_gradient(problem, sam, theta).descent)  # g̃ + λθ
    assert rel_err(step, direction(theta)) <= RTOL_STEP
    jacobian = autograd.jacobian(direction)(theta)
    assert rel_err(linearise(problem, sam, theta, optimizer=optimizer).jacobian, jacobian) <= RTOL_JACOBIAN


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_trajectory_methods_agree_with_autodiff_and_replays(name, regularization):
    problem, lam, X_test, y_test = _problem(name, regularization)
    optimizer = _sgd(0.2, lam, regularization, momentum=0.9, nesterov=True)
    run = refsam.train(problem, refsam.SAM(0.1), optimizer, 8, batch_size=5, seed=1)
    exact = {m: refsam.trajectory_influence(problem, run, X_test, y_test, method=m)
             for m in ("adjoint", "forward", "autodiff")}
    assert rel_err(exact["adjoint"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["forward"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["adjoint"], refsam.finite_difference_replay(problem, run, X_test, y_test)) <= \
        RTOL_TRAJECTORY_FD
    scalar = float(lam.max())
    same_scalar = refsam.Problem(problem.model, problem.X, problem.y,
                                 l2=scalar if regularization == "coupled" else 0.0)
    other = refsam.train(same_scalar, refsam.SAM(0.1), _sgd(0.2, scalar, regularization, momentum=0.9,
                                                            nesterov=True), 8, batch_size=5, seed=1)
    assert np.max(np.abs(other.theta_final - run.theta_final)) > 1e-6  # the per-coordinate λ is used


def test_the_closed_form_equals_re_solved_differences_with_per_coordinate_decay():
    problem, lam, X_test, y_test = _problem("logistic", n=30, seed=6)
    sam, optimizer = refsam.SAM(0.05), _sgd(0.5, lam)
    start = refsam.train(problem, sam, optimizer, 200).theta_final
    root = refsam.solve_fixed_point(problem, sam, start, optimizer=optimizer)
    indices = np.array([0, 13, 29])
    expected = refsam.finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    for variant in ("full", "frozen", "erm"):  # every variant's J uses diag(λ)
        influence = refsam.hessian_influence(problem, sam, root, X_test, y_test, variant=variant)
        assert np.all(np.isfinite(influence))
    assert rel_err(refsam.hessian_influence(problem, sam, root, X_test, y_test)[indices], expected) <= \
        RTOL_CLOSED_FORM_FD
    # the derivative in a per-coordinate λ is not one vector: None (0.1 refused the call); dθ̂/dρ and
    # dθ̂/dλ₂ (the loss's scalar l2 = 0) still are, dθ̂/dρ against re-solved differences
    sens = refsam.hyperparameter_sensitivity(problem, sam, root)
    assert sens.d_weight_decay is None and sens.d_l2 is not None
    h = 1e-5
    fd_rho = (refsam.solve_fixed_point(problem, refsam.SAM(0.05 + h), root.theta, optimizer=optimizer,
                                       tol=1e-13).theta
              - refsam.solve_fixed_point(problem, refsam.SAM(0.05 - h), root.theta, optimizer=optimizer,
                                         tol=1e-13).theta) / (2 * h)
    assert rel_err(sens.d_rho, fd_rho) <= RTOL_CLOSED_FORM_FD


@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_a_per_coordinate_run_round_trips_its_file_and_checks_its_problem(tmp_path, regularization):
    problem, lam, _, _ = _problem("logistic", regularization)
    run = refsam.train(problem, refsam.SAM(0.1), _sgd(0.3, lam, regularization), 4)
    run.save(tmp_path / "run.npz")
    loaded = refsam.Trajectory.load(tmp_path / "run.npz")
    np.testing.assert_array_equal(refsam.replay(problem, loaded).thetas, run.thetas)
    if regularization == "decoupled":  # the run carries its optimizer's per-coordinate λ
        np.testing.assert_array_equal(loaded.optimizer().weight_decay, lam)
        scalar = refsam.Problem(problem.model, problem.X, problem.y, l2=0.1)
    else:  # the problem's per-coordinate l2 is checked against the recorded one
        assert np.all(loaded.optimizer().weight_decay == 0.0)
        scalar = refsam.Problem(problem.model, problem.X, problem.y, l2=float(lam.max()))
    with pytest.raises(ValueError, match="l2"):
        refsam.replay(scalar, loaded)


@pytest.mark.parametrize(("value", "message"), [
    (np.ones(3), r"`{}` must have shape \(4,?\).*, got \(3,\)"),
    (np.array([0.1, -0.1, 0.0, 0.0]), r"`{}` entries must be >= 0, got minimum -0.1"),
    (np.array([0.1, np.nan, 0.0, 0.0]), r"`{}` must contain only finite values"),
])
@pytest.mark.parametrize("where", ["l2", "weight_decay"])
def test_a_bad_per_coordinate_decay_is_rejected_by_name(value, message, where):
    problem = refsam.Problem(refsam.LogisticRegression(), np.eye(3), [0, 1, 0])
    with pytest.raises(ValueError, match=message.format(where)):
        if where == "l2":
            refsam.Problem(refsam.LogisticRegression(), np.eye(3), [0, 1, 0], l2=value)
        else:  # the optimizer knows d only when it meets θ: at train (or any root function)
            refsam.train(problem, refsam.SAM(0.1), refsam.SGD(0.1, weight_decay=value), 1)
