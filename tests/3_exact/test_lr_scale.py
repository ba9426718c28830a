"""dθ_T/ds for the learning-rate schedule scaled, η_t → s η_t at s = 1 (``d_lr_scale``).

Oracles: each optimizer's ∂θ'/∂η against central differences of its own update in η (the update is affine
in η, so the difference is exact to rounding whatever h); the run's derivative against central differences
of re-running the recorded schedule (θ_0, batches, clipping) with every η_t scaled by 1 ± h; and, for a
run that has converged to a stable root, the closed form's 0 (no optimizer's root depends on η).
"""

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_TRAJECTORY_FD, rel_err
from refsam.training import GradientClipping, linear_warmup_cosine_lr

H = 1e-5  # relative step of the re-run differences (truncation ~h², rounding ~1e-16/h)

OPTIMIZERS = {
    "sgd": lambda lr: refsam.SGD(lr, weight_decay=0.05),
    "heavyball-dampened": lambda lr: refsam.SGD(lr * 0.1, momentum=0.9, dampening=0.3, weight_decay=0.05),
    "nesterov": lambda lr: refsam.SGD(lr * 0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
    "adam": lambda lr: refsam.Adam(lr * 0.1, eps=1e-3, weight_decay=0.05),
    "adamw": lambda lr: refsam.AdamW(lr * 0.1, eps=1e-3, weight_decay=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("t", [0, 3])
def test_lr_derivative_is_the_update_differenced_in_lr(name, t):
    rng = np.random.default_rng(t)
    optimizer = OPTIMIZERS[name](0.5)
    theta, grad = rng.normal(size=6), rng.normal(size=6)
    state = tuple(np.abs(rng.normal(size=6)) for _ in optimizer.state_names)  # v ≥ 0 for Adam
    lr, h = 0.3, 1e-3

    def new_theta(eta):
        return optimizer.update(t, eta, theta, state, grad)[0]

    fd = (new_theta(lr + h) - new_theta(lr - h)) / (2 * h)
    derivative = optimizer.lr_derivative(t, theta, state, grad)
    assert np.max(np.abs(derivative)) > 0.1
    assert rel_err(derivative, fd) <= 1e-9  # affine in η: only rounding (~1e-16 / h)
    state_after = optimizer.update(t, lr + h, theta, state, grad)[1]
    for before, after in zip(optimizer.update(t, lr, theta, state, grad)[1], state_after):
        np.testing.assert_array_equal(before, after)  # the state never reads η


@pytest.mark.parametrize("name, model, batch_size, clip", [
    ("sgd", "logistic", None, None),
    ("heavyball-dampened", "softmax", 6, None),
    ("nesterov", "mlp", 6, None),
    ("adam", "softmax", 6, 0.2),
    ("adamw", "mlp", None, 0.2),
])
def test_lr_scale_derivative_equals_rerunning_the_scaled_schedule(name, model, batch_size, clip):
    k = 2 if model == "logistic" else 3
    X, y, _ = refsam.make_gaussian_classification(n=18, n_features=3, n_classes=k, seed=5)
    net = {"logistic": refsam.LogisticRegression(), "softmax": refsam.SoftmaxRegression(3),
           "mlp": refsam.MLP((3, 4, 3))}[model]
    steps = 15
    schedule = linear_warmup_cosine_lr(0.5, steps, warmup_steps=3)
    problem = refsam.Problem(net, X, y, l2=1e-3)
    clipping = None if clip is None else GradientClipping(clip)
    run = refsam.train(problem, refsam.SAM(0.05), OPTIMIZERS[name](schedule), steps, batch_size=batch_size,
                       seed=1, clip_grad_norm=clipping)
    if clipping is not None:  # the clip is active on some steps and the derivative goes through it
        assert any(clipping.factor(np.linalg.norm(refsam.training.sam_gradient(
            problem, run.sam(), run.thetas[t], run.batches[t]).descent)) < 1.0 for t in range(steps))
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, run)

    def final(scale):
        optimizer = run.optimizer().replace(lr=scale * run.lrs)
        return refsam.train(problem, run.sam(), optimizer, theta0=run.theta0, batches=run.batches,
                            clip_grad_norm=clipping).theta_final

    fd = (final(1 + H) - final(1 - H)) / (2 * H)
    assert np.max(np.abs(fd)) > 1e-3
    assert rel_err(sensitivity.d_lr_scale, fd) <= RTOL_TRAJECTORY_FD


def test_a_converged_run_forgets_the_lr_scale_as_the_closed_form_says():
    """At a root the derivative in s is 0 (the residual g̃ + λθ never reads η); a full-batch run that
    converges to a stable root has dθ_T/ds → 0 geometrically, and the closed form reports exactly 0."""
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, seed=0)
    problem, optimizer = refsam.Problem(refsam.LogisticRegression(), X, y), refsam.SGD(0.5, weight_decay=0.05)
    sam = refsam.SAM(0.1)
    root = refsam.solve_fixed_point(problem, sam, problem.init_params(0), optimizer=optimizer)
    closed = refsam.hyperparameter_sensitivity(problem, sam, root)
    np.testing.assert_array_equal(closed.d_lr_scale, np.zeros(problem.d))
    sizes = []
    for steps in (20, 100, 400):
        run = refsam.train(problem, sam, optimizer, steps, seed=0)
        sizes.append(np.max(np.abs(refsam.trajectory_hyperparameter_sensitivity(problem, run).d_lr_scale)))
    assert sizes[0] > 1e-2 and sizes[0] > 10 * sizes[1] > 100 * sizes[2]
