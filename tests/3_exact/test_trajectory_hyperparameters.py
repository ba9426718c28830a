"""dθ_T/dρ and dθ_T/dλ through a recorded run.

Oracles: central finite differences of re-running the same schedule (θ_0, batches, η_t, momentum) at
ρ ± h and λ ± h; and, for a full-batch run that has converged to a stable root, the closed form
``hyperparameter_sensitivity`` at that root (the run's derivative converges to the root's).

0.1's dθ_T/dλ was in the λ of the mode in use: in 0.2 ``d_weight_decay`` (the optimizer's λ, 0.1's
"decoupled") or ``d_l2`` (the loss's λ, 0.1's "coupled"); each is checked against re-runs that perturb
that same λ.
"""

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_TRAJECTORY_FD, RTOL_TRAJECTORY_TO_CLOSED_FORM, rel_err

H = 1e-5  # relative step of the hyper-parameter finite differences: truncation ~h², rounding ~1e-16/h


def penalised(model, X, y, lam, regularization, lr, **momentum):
    """(problem, optimizer): 0.1's "decoupled" λ is the SGD's weight decay, "coupled" λ the loss's l2."""
    if regularization == "coupled":
        return refsam.Problem(model, X, y, l2=lam), refsam.SGD(lr, **momentum)
    return refsam.Problem(model, X, y), refsam.SGD(lr, weight_decay=lam, **momentum)


def mode_lambda(problem, trajectory, regularization):
    """The λ of the mode in use: the loss's l2 ("coupled") or the optimizer's weight decay."""
    return problem.l2 if regularization == "coupled" else trajectory.optimizer().weight_decay


def rerun(problem, trajectory, rho, lam, regularization="decoupled"):
    """θ_T of the recorded schedule (θ_0, batches, η_t, the optimizer) at other (ρ, λ), λ where
    ``regularization`` puts it."""
    optimizer = trajectory.optimizer()  # lr: the recorded per-step rates
    if regularization == "coupled":
        other = refsam.Problem(problem.model, problem.X, problem.y, trajectory.weights, l2=lam)
    else:
        other = refsam.Problem(problem.model, problem.X, problem.y, trajectory.weights, l2=problem.l2)
        optimizer = optimizer.replace(weight_decay=lam)
    sam = trajectory.sam()
    return refsam.train(other, refsam.SAM(rho, sam.rule, sam.kappa, sam.norm_eps, sam.t_mask,
                                          sam.m_sharpness),
                        optimizer, theta0=trajectory.theta0, batches=trajectory.batches).theta_final


def finite_differences(problem, trajectory, regularization="decoupled"):
    rho, lam = trajectory.sam().rho, mode_lambda(problem, trajectory, regularization)
    h_rho, h_lam = H * max(rho, 1.0), H * max(lam, 1.0)
    d_rho = (rerun(problem, trajectory, rho + h_rho, lam, regularization)
             - rerun(problem, trajectory, rho - h_rho, lam, regularization)) / (2 * h_rho)
    d_lam = (rerun(problem, trajectory, rho, lam + h_lam, regularization)
             - rerun(problem, trajectory, rho, lam - h_lam, regularization)) / (2 * h_lam)
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
    lr = 0.3 * (1 - momentum) if momentum else 0.3
    problem, optimizer = penalised(net, X, y, 0.05, regularization, lr, momentum=momentum, nesterov=nesterov)
    trajectory = refsam.train(problem, refsam.SAM(0.1, rule, m_sharpness=m), optimizer, 25,
                              batch_size=batch_size, seed=1)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
    d_rho, d_lam = finite_differences(problem, trajectory, regularization)
    assert np.max(np.abs(d_rho)) > 1e-4 and np.max(np.abs(d_lam)) > 1e-4  # both move θ_T
    assert rel_err(sensitivity.d_rho, d_rho) <= RTOL_TRAJECTORY_FD
    mode_derivative = sensitivity.d_l2 if regularization == "coupled" else sensitivity.d_weight_decay
    assert rel_err(mode_derivative, d_lam) <= RTOL_TRAJECTORY_FD


def test_at_rho_zero_the_rho_derivative_is_still_defined():
    X, y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=2)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    trajectory = refsam.train(problem, refsam.SAM(0.0), refsam.SGD(0.5, weight_decay=0.05), 20, seed=0)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
    h = 1e-5
    forward = (rerun(problem, trajectory, h, 0.05) - trajectory.theta_final) / h  # one-sided: ρ ≥ 0
    assert rel_err(sensitivity.d_rho, forward) <= 1e-3  # O(h) truncation of a one-sided difference
    assert np.max(np.abs(sensitivity.d_rho)) > 1e-3


def test_a_converged_run_has_the_closed_form_hyperparameter_sensitivity():
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, seed=0)
    problem, optimizer = refsam.Problem(refsam.LogisticRegression(), X, y), refsam.SGD(0.5, weight_decay=0.05)
    sam = refsam.SAM(0.1)
    root = refsam.solve_fixed_point(problem, sam, problem.init_params(0), optimizer=optimizer)
    assert root.stable
    closed = refsam.hyperparameter_sensitivity(problem, sam, root)
    errors = []
    for steps in (100, 400, 1600):
        run = refsam.train(problem, sam, optimizer, steps, seed=0)
        sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, run)
        errors.append(max(rel_err(sensitivity.d_rho, closed.d_rho),
                          rel_err(sensitivity.d_weight_decay, closed.d_weight_decay),
                          rel_err(sensitivity.d_l2, closed.d_l2)))  # 0.2: the loss's λ (at l2 = 0) too
    assert errors[0] > errors[1] > errors[2] and errors[2] <= RTOL_TRAJECTORY_TO_CLOSED_FORM


@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_per_coordinate_decay_is_refused(regularization):
    """A per-coordinate λ has no single derivative: 0.1 refused the call, 0.2 returns None for that λ's
    field (and only that one); dθ_T/dρ is still the re-runs' derivative."""
    X, y, _ = refsam.make_gaussian_classification(n=10, n_features=3, seed=0)
    problem, optimizer = penalised(refsam.LogisticRegression(), X, y, np.full(4, 0.05), regularization, 0.5)
    trajectory = refsam.train(problem, refsam.SAM(0.1), optimizer, 3, seed=0)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
    if regularization == "coupled":
        assert sensitivity.d_l2 is None and sensitivity.d_weight_decay is not None
    else:
        assert sensitivity.d_weight_decay is None and sensitivity.d_l2 is not None
    lam = mode_lambda(problem, trajectory, regularization)
    h = H
    d_rho = (rerun(problem, trajectory, 0.1 + h, lam, regularization)
             - rerun(problem, trajectory, 0.1 - h, lam, regularization)) / (2 * h)
    assert rel_err(sensitivity.d_rho, d_rho) <= RTOL_TRAJECTORY_FD
