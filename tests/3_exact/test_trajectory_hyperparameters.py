"""dθ_T/dρ and dθ_T/dλ through a recorded run.

Oracles: central finite differences of re-running the same schedule (θ_0, batches, η_t, momentum) at
ρ ± h and λ ± h; and, for a full-batch run that has converged to a stable root, the closed form
``hyperparameter_sensitivity`` at that root (the run's derivative converges to the root's).
"""

import numpy as np
import pytest

import refsam
from refsam.errors import InvalidInputError
from refsam.tolerances import RTOL_TRAJECTORY_FD, RTOL_TRAJECTORY_TO_CLOSED_FORM, rel_err

H = 1e-5  # relative step of the hyper-parameter finite differences: truncation ~h², rounding ~1e-16/h


def rerun(problem, trajectory, rho, weight_decay):
    """θ_T of the recorded schedule at other (ρ, λ)."""
    c = trajectory.config
    other = refsam.Problem(problem.model, problem.X, problem.y, weight_decay, trajectory.weights,
                           problem.regularization)
    sam = trajectory.sam()
    return refsam.train(other, refsam.SAM(rho, sam.rule, sam.kappa, sam.norm_eps, sam.t_mask,
                                          sam.m_sharpness),
                        trajectory.lrs, theta0=trajectory.theta0, batches=trajectory.batches,
                        momentum=c["momentum"], dampening=c["dampening"], nesterov=c["nesterov"]).theta_final


def finite_differences(problem, trajectory):
    rho, lam = trajectory.sam().rho, problem.weight_decay
    h_rho, h_lam = H * max(rho, 1.0), H * max(lam, 1.0)
    d_rho = (rerun(problem, trajectory, rho + h_rho, lam)
             - rerun(problem, trajectory, rho - h_rho, lam)) / (2 * h_rho)
    d_lam = (rerun(problem, trajectory, rho, lam + h_lam)
             - rerun(problem, trajectory, rho, lam - h_lam)) / (2 * h_lam)
    return d_rho, d_lam


CASES = [
    # model, rule, regularization, batch_size, momentum, nesterov, m_sharpness
    ("logistic", "sam", "decoupled", None, 0.0, False, None),
    ("logistic", "asam", "coupled", 6, 0.0, False, None),
    ("softmax", "usam", "decoupled", 6, 0.9, False, None),
    ("softmax", "sam", "coupled", None, 0.9, True, None),
    ("mlp", "asam", "decoupled", 6, 0.9, True, None),
    ("mlp", "sam", "decoupled", 8, 0.0, False, 4),
]


@pytest.mark.parametrize("model, rule, regularization, batch_size, momentum, nesterov, m", CASES)
def test_trajectory_hyperparameters_equal_finite_differences_of_rerunning(model, rule, regularization,
                                                                          batch_size, momentum, nesterov, m):
    k = 3 if model == "softmax" else 2
    X, y, _ = refsam.make_gaussian_classification(n=24, n_features=3, n_classes=k, seed=3)
    net = {"logistic": refsam.LogisticRegression(), "softmax": refsam.SoftmaxRegression(3),
           "mlp": refsam.MLP((3, 4, 2))}[model]
    problem = refsam.Problem(net, X, y, 0.05, regularization=regularization)
    lr = 0.3 * (1 - momentum) if momentum else 0.3
    trajectory = refsam.train(problem, refsam.SAM(0.1, rule, m_sharpness=m), lr, 25, batch_size=batch_size,
                              seed=1, momentum=momentum, nesterov=nesterov)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
    d_rho, d_lam = finite_differences(problem, trajectory)
    assert np.max(np.abs(d_rho)) > 1e-4 and np.max(np.abs(d_lam)) > 1e-4  # both move θ_T
    assert rel_err(sensitivity.d_rho, d_rho) <= RTOL_TRAJECTORY_FD
    assert rel_err(sensitivity.d_weight_decay, d_lam) <= RTOL_TRAJECTORY_FD


def test_at_rho_zero_the_rho_derivative_is_still_defined():
    X, y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=2)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, 0.05)
    trajectory = refsam.train(problem, refsam.SAM(0.0), 0.5, 20, seed=0)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
    h = 1e-5
    forward = (rerun(problem, trajectory, h, 0.05) - trajectory.theta_final) / h  # one-sided: ρ ≥ 0
    assert rel_err(sensitivity.d_rho, forward) <= 1e-3  # O(h) truncation of a one-sided difference
    assert np.max(np.abs(sensitivity.d_rho)) > 1e-3


def test_a_converged_run_has_the_closed_form_hyperparameter_sensitivity():
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, 0.05)
    sam = refsam.SAM(0.1)
    root = refsam.solve_fixed_point(problem, sam, problem.init_params(0), lr=0.5)
    assert root.stable
    closed = refsam.hyperparameter_sensitivity(problem, sam, root)
    errors = []
    for steps in (100, 400, 1600):
        run = refsam.train(problem, sam, 0.5, steps, seed=0)
        sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, run)
        errors.append(max(rel_err(sensitivity.d_rho, closed.d_rho),
                          rel_err(sensitivity.d_weight_decay, closed.d_weight_decay)))
    assert errors[0] > errors[1] > errors[2] and errors[2] <= RTOL_TRAJECTORY_TO_CLOSED_FORM


def test_per_coordinate_decay_is_refused():
    X, y, _ = refsam.make_gaussian_classification(n=10, n_features=3, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, np.full(4, 0.05))
    trajectory = refsam.train(problem, refsam.SAM(0.1), 0.5, 3, seed=0)
    with pytest.raises(InvalidInputError, match="one scalar"):
        refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
