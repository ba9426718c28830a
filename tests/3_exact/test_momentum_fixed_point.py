"""Fixed points under momentum: the same roots and the same closed form (a converged momentum run's
trajectory influence tends to it), and the spectral radius of the momentum iteration — not plain GD's —
says whether training gets there: checked against the explicit 2d × 2d iteration matrix and against runs
that do and do not converge."""

import numpy as np
import pytest

import refsam
from refsam.influence import spectral_radius
from refsam.tolerances import RTOL_JACOBIAN, RTOL_TRAJECTORY_TO_CLOSED_FORM, rel_err
from refsam.training import SGD

LAM = 0.05  # 0.1's (decoupled) weight_decay=0.05: the base optimizer's weight decay
OPTIMIZERS = [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.8, "dampening": 0.3},
              {"momentum": 0.7, "dampening": 0.2, "nesterov": True}]


def sgd(lr, **momentum):
    return SGD(lr, weight_decay=LAM, **momentum)


def _problem(scale=1.2):
    """Logistic regression whose SAM root is unstable for plain GD at η = 2.5 (radius 1.14) and stable
    for heavy-ball μ = 0.9 (radius √0.9). The root is solved with plain SGD at η = 0.3 (stable there)."""
    X, y, _ = refsam.make_gaussian_classification(n=60, n_features=3, separation=1.0, seed=7)
    problem = refsam.Problem(refsam.LogisticRegression(), scale * X, y)
    sam = refsam.SAM(0.05)
    return problem, sam, refsam.solve_fixed_point(problem, sam, np.zeros(problem.d), optimizer=sgd(0.3))


def _iteration_matrix(J, lr, optimizer):
    """The linearised iteration on (δθ_t, buf_{t−1}), written out as a 2d × 2d matrix."""
    d, I = J.shape[0], np.eye(J.shape[0])
    mu, tau = optimizer.momentum, optimizer.dampening
    if optimizer.nesterov:
        top = np.hstack([I - lr * (1 + mu * (1 - tau)) * J, -lr * mu**2 * I])
    else:
        top = np.hstack([I - lr * (1 - tau) * J, -lr * mu * I])
    return np.vstack([top, np.hstack([(1 - tau) * J, mu * I])]).reshape(2 * d, 2 * d)


@pytest.mark.parametrize("momentum", OPTIMIZERS, ids=lambda o: repr(sgd(1.0, **o)))
@pytest.mark.parametrize("lr", [0.3, 2.5])
def test_the_momentum_radius_is_the_spectral_radius_of_the_explicit_iteration(momentum, lr):
    optimizer = sgd(lr, **momentum)
    _, _, root = _problem()
    explicit = np.max(np.abs(np.linalg.eigvals(_iteration_matrix(root.jacobian, lr, optimizer))))
    assert spectral_radius(root.jacobian, lr, optimizer) == pytest.approx(explicit, rel=RTOL_JACOBIAN)
    plain = np.max(np.abs(np.linalg.eigvals(np.eye(root.jacobian.shape[0]) - lr * root.jacobian)))
    assert spectral_radius(root.jacobian, lr) == pytest.approx(plain, rel=1e-15)


def test_the_momentum_radius_predicts_which_runs_reach_the_root():
    problem, sam, root = _problem()
    start = root.theta + 1e-3
    for optimizer, converges in ((sgd(2.5), False), (sgd(2.5, momentum=0.9), True),
                                 (sgd(2.5, momentum=0.9, nesterov=True), False)):
        radius = spectral_radius(root.jacobian, 2.5, optimizer)
        assert (radius < 1) == converges, (optimizer, radius)
        try:
            run = refsam.train(problem, sam, optimizer, 3000, theta0=start)
            distance = np.linalg.norm(run.theta_final - root.theta)
        except FloatingPointError:  # diverged to inf: certainly not converged
            distance = np.inf
        assert (distance < 1e-10) == converges, (optimizer, radius, distance)
    # the diagnostics report the radius of the iteration they are given
    diagnostics = refsam.fixed_point_diagnostics(problem, sam, root.theta, optimizer=sgd(2.5, momentum=0.9))
    assert diagnostics.stable and diagnostics.spectral_radius == pytest.approx(np.sqrt(0.9), rel=1e-9)
    assert "heavy-ball iteration (μ = 0.9" in diagnostics.describe()
    assert refsam.fixed_point_diagnostics(problem, sam, root.theta, optimizer=sgd(2.5)).stable is False


def test_solve_fixed_point_under_momentum_finds_the_same_root_and_judges_it_by_the_momentum_radius():
    problem, sam, root = _problem()
    optimizer = sgd(2.5, momentum=0.9)
    with_momentum = refsam.solve_fixed_point(problem, sam, np.zeros(problem.d), optimizer=optimizer)
    np.testing.assert_allclose(with_momentum.theta, root.theta, rtol=0, atol=1e-12)
    assert with_momentum.stable and with_momentum.optimizer is optimizer and with_momentum.lr == 2.5
    assert with_momentum.spectral_radius == pytest.approx(spectral_radius(root.jacobian, 2.5, optimizer))


@pytest.mark.parametrize("optimizer", [sgd(0.5, momentum=0.9), sgd(0.5, momentum=0.5, nesterov=True)],
                         ids=repr)
def test_a_converged_momentum_run_s_influence_tends_to_the_closed_form(optimizer):
    """Momentum does not move the root, so the exact derivative of a converging momentum run tends to the
    closed form at that root as T grows — the closed form is unchanged by momentum."""
    problem, sam, _ = _problem(scale=1.0)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=5, n_features=3, seed=8)
    errors = []
    for steps in (40, 150, 600):
        run = refsam.train(problem, sam, optimizer, steps, seed=0)
        root = refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=run.optimizer())
        closed = refsam.hessian_influence(problem, sam, root, X_test, y_test)
        errors.append(rel_err(refsam.trajectory_influence(problem, run, X_test, y_test), closed))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= RTOL_TRAJECTORY_TO_CLOSED_FORM
