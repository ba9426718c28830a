"""m-sharpness: each chunk of m samples of a batch gets its own perturbation and the direction averages
the chunks' directions. The step equals an independent autograd re-derivation; the exact trajectory
methods agree with autograd through an independent loop and with replay finite differences, for every
model, both of 0.1's modes (0.2: weight decay in the optimizer, or L2 in the loss), with momentum; the
fixed-point methods refuse it with the reason."""

import autograd
import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_EXACT_METHODS, RTOL_STEP, RTOL_TRAJECTORY_FD, rel_err
from refsam.training import sam_gradient

MODELS = {"logistic": lambda: refsam.LogisticRegression(), "softmax": lambda: refsam.SoftmaxRegression(3),
          "mlp": lambda: refsam.MLP((3, 4, 3), "softplus")}


LAM = 0.05


def _problem(name, regularization="decoupled"):
    """(problem, test X, test y): λ in the loss for 0.1's "coupled" mode, else none (see _sgd)."""
    model = MODELS[name]()
    X, y, _ = refsam.make_gaussian_classification(n=19, n_features=3, n_classes=model.n_classes, seed=2)
    l2 = LAM if regularization == "coupled" else 0.0
    return refsam.Problem(model, X[:16], y[:16], l2=l2), X[16:], y[16:]


def _sgd(lr, regularization="decoupled", **kwargs):
    """The base optimizer: λ as its weight decay for 0.1's "decoupled" mode."""
    return refsam.SGD(lr, weight_decay=LAM if regularization == "decoupled" else 0.0, **kwargs)


def _direction(problem, sam, theta, idx, optimizer):
    """0.1's descent direction: the descent gradient g̃ plus the optimizer's λθ (its residual)."""
    return optimizer.residual(theta, sam_gradient(problem, sam, theta, idx).descent)


@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
@pytest.mark.parametrize("rule", ["sam", "asam"])
def test_the_m_sharpness_direction_averages_per_chunk_sam_directions(regularization, rule):
    problem, _, _ = _problem("softmax", regularization)
    optimizer = _sgd(0.1, regularization)
    sam = refsam.SAM(0.1, rule, m_sharpness=3)
    theta = problem.init_params(0) + 0.2
    idx = np.array([5, 1, 9, 2, 14, 7, 0, 11])  # 8 samples: chunks (5, 1, 9), (2, 14, 7), (0, 11)
    grad = autograd.grad(lambda t, rows: problem.objective(t, rows) + (
        problem.regularizer(t) if regularization == "coupled" else 0.0))
    expected = 0.0 if regularization == "coupled" else LAM * theta
    for rows in (idx[:3], idx[3:6], idx[6:]):
        w_hat = theta + sam.perturbation(theta, grad(theta, rows))
        expected = expected + len(rows) / 8 * grad(w_hat, rows)
    assert rel_err(_direction(problem, sam, theta, idx, optimizer), expected) <= RTOL_STEP
    plain = refsam.SAM(0.1, rule)
    assert rel_err(_direction(problem, plain, theta, idx, optimizer), expected) > 1e-6
    big_m = refsam.SAM(0.1, rule, m_sharpness=8)  # m >= |B|: one chunk, the plain step bit for bit
    np.testing.assert_array_equal(_direction(problem, big_m, theta, idx, optimizer),
                                  _direction(problem, plain, theta, idx, optimizer))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_exact_methods_agree_through_m_sharpness_runs(name, regularization):
    problem, X_test, y_test = _problem(name, regularization)
    sam = refsam.SAM(0.1, "asam" if regularization == "coupled" else "sam", m_sharpness=2)
    optimizer = _sgd(0.1, regularization, momentum=0.9, nesterov=True)
    run = refsam.train(problem, sam, optimizer, 8, batch_size=6, seed=1)
    exact = {m: refsam.trajectory_influence(problem, run, X_test, y_test, method=m)
             for m in ("adjoint", "forward", "autodiff")}
    assert np.max(np.abs(exact["autodiff"])) > 1e-4
    assert rel_err(exact["adjoint"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["forward"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["adjoint"], refsam.finite_difference_replay(problem, run, X_test, y_test)) <= \
        RTOL_TRAJECTORY_FD
    plain = refsam.train(problem, refsam.SAM(0.1, sam.rule), optimizer, 8, batch_size=6, seed=1)
    assert np.max(np.abs(plain.theta_final - run.theta_final)) > 1e-6  # the chunks matter
    for method in ("first_order", "tracin"):
        assert np.all(np.isfinite(refsam.trajectory_influence(problem, run, X_test, y_test, method=method)))


def test_an_m_sharpness_run_round_trips_and_the_fixed_point_refuses_it(tmp_path):
    problem, X_test, y_test = _problem("logistic")
    sam = refsam.SAM(0.1, m_sharpness=4)
    run = refsam.train(problem, sam, _sgd(0.3), 5)
    run.save(tmp_path / "run.npz")
    loaded = refsam.Trajectory.load(tmp_path / "run.npz")
    assert loaded.sam().m_sharpness == 4
    assert loaded.optimizer().config() == run.optimizer().config() == _sgd(0.3).config()
    np.testing.assert_array_equal(refsam.replay(problem, loaded).thetas, run.thetas)
    with pytest.raises(ValueError, match=r"m-sharpness .* do not support it"):
        refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=run.optimizer())
    with pytest.raises(ValueError, match=r"`m_sharpness` must be an int >= 1, got 0"):
        refsam.SAM(0.1, m_sharpness=0)
