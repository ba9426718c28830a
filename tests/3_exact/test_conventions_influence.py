"""Rungs 3–4 for the public conventions: through runs with each preset (momentum, the denominator
epsilon, κ = 0, weights-only T) and with label smoothing, adjoint = forward = autodiff ≤ 1e-9 and =
replay finite differences ≤ 1e-5; and the closed form at a root of each convention equals central
differences of re-solved roots ≤ 1e-6."""

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_CLOSED_FORM_FD, RTOL_EXACT_METHODS, RTOL_TRAJECTORY_FD, rel_err
from refsam.training import PRESETS, preset

MODELS = {"logistic": lambda: refsam.LogisticRegression(0.1), "softmax": lambda: refsam.SoftmaxRegression(3),
          "mlp": lambda: refsam.MLP((3, 4, 3), "tanh", label_smoothing=0.1)}


def _data(model, n=14, seed=5):
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=3, n_classes=model.n_classes, seed=seed)
    return X[:n], y[:n], X[n:], y[n:]


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_exact_methods_agree_through_preset_runs(name, model_name):
    model = MODELS[model_name]()
    X, y, X_test, y_test = _data(model)
    if name == "jax-sam":  # an L2 penalty on the weights only (its --no_weight_decay_on_bn), in the loss;
        # m-sharpness; Nesterov; its clipping at 5.0 (optax's convention)
        p = preset(name, refsam.Problem(model, X, y), rho=0.1, lr=0.2, weight_decay=0.01, momentum=0.9,
                   m_sharpness=2, weights_only=True)
        assert isinstance(p.problem.l2, np.ndarray) and p.optimizer.weight_decay == 0.0
    elif name == "gnp":  # L2 on every parameter in the loss, the unit-gradient mix, clip 5, Nesterov
        p = preset(name, refsam.Problem(model, X, y), rho=0.1, lr=0.2, weight_decay=0.01, momentum=0.9)
        assert p.problem.l2 == 0.01 and p.optimizer.weight_decay == 0.0 and p.optimizer.nesterov
    else:  # weight decay in the base optimizer
        extra = {"perturb_mask": model.bias_mask(3)} if name == "sam-on" else {}  # biases: the "norm" layers
        if name == "gsam":  # ρ_t tied to the learning rate
            extra = {"rho_min": 0.02}
        lr = np.linspace(0.2, 0.1, 8) if name == "gsam" else 0.2
        p = preset(name, refsam.Problem(model, X, y), rho=0.1, lr=lr, weight_decay=0.01, momentum=0.9,
                   nesterov=model_name == "softmax", **extra)
        assert p.problem.l2 == 0.0 and p.optimizer.weight_decay == 0.01
    problem = p.problem
    run = refsam.train(problem, p.sam, p.optimizer, 8, batch_size=5, seed=2, clip_grad_norm=p.clip_grad_norm)
    exact = {m: refsam.trajectory_influence(problem, run, X_test, y_test, method=m)
             for m in ("adjoint", "forward", "autodiff")}
    assert np.max(np.abs(exact["autodiff"])) > 1e-4
    assert rel_err(exact["adjoint"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["forward"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    fd = refsam.finite_difference_replay(problem, run, X_test, y_test)
    assert rel_err(exact["adjoint"], fd) <= RTOL_TRAJECTORY_FD


@pytest.mark.parametrize("sam", [refsam.SAM(0.05, "sam", norm_eps=0.05),
                                 refsam.SAM(0.05, "asam", kappa=0.0, norm_eps=1e-12),
                                 refsam.SAM(0.1, "asam", kappa=0.01, norm_eps=1e-16,
                                            t_mask=np.array([True, True, True, False]))],
                         ids=["norm_eps", "kappa0", "weights_only"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_closed_form_equals_re_solved_differences_for_each_convention(sam, smoothing):
    model = refsam.LogisticRegression(smoothing)
    X, y, X_test, y_test = _data(model, n=30, seed=6)
    problem = refsam.Problem(model, X, y)
    optimizer = refsam.SGD(0.5, weight_decay=0.05)
    run = refsam.train(problem, sam, optimizer, 200, seed=0)
    root = refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=optimizer)
    indices = np.array([0, 11, 29])
    expected = refsam.finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    actual = refsam.hessian_influence(problem, sam, root, X_test, y_test)[indices]
    assert np.max(np.abs(expected)) > 1e-4
    assert rel_err(actual, expected) <= RTOL_CLOSED_FORM_FD
