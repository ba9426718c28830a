"""The presets reproduce what each public SAM implementation computes, step for step: the reference below
writes each one's step out from its documented conventions (per-tensor arithmetic, as that code does it)
and refsam's run must match it to round-off."""

import numpy as np
import pytest

import refsam
from refsam.training import PRESETS, preset

X, Y, _ = refsam.make_gaussian_classification(n=24, n_features=3, n_classes=3, seed=9)


def _softmax_problem():
    return refsam.Problem(refsam.SoftmaxRegression(3), X, Y, weight_decay=5e-4)


def _reference(name, problem, theta0, batches, lr, rho, momentum):
    """The public code's step, for softmax regression with parameters (weight matrix W, bias b):
    the SAM wrapper / ASAM's first step from the loss gradient, the gradient at the perturbed point, θ
    restored, then torch.optim.SGD(momentum, weight_decay) on it."""
    lam, (p, K) = problem.weight_decay, (problem.p, 3)
    theta, buf = theta0.copy(), None
    for idx in batches:
        g = problem.grad(theta, idx)
        W, b, gW, gb = theta[:-K].reshape(p, K), theta[-K:], g[:-K].reshape(p, K), g[-K:]
        if name == "pytorch-sam":  # grad_norm over all tensors; e_w = g * rho / (grad_norm + 1e-12)
            scale = rho / (np.sqrt(np.sum(gW**2) + np.sum(gb**2)) + 1e-12)
            eW, eb = gW * scale, gb * scale
        elif name == "pytorch-sam-adaptive":  # e_w = p² * g * rho / (‖|p| g‖ + 1e-12), every tensor
            scale = rho / (np.sqrt(np.sum((np.abs(W) * gW) ** 2) + np.sum((np.abs(b) * gb) ** 2)) + 1e-12)
            eW, eb = W**2 * gW * scale, b**2 * gb * scale
        else:  # official ASAM: t = |p| + 0.01 on "weight" tensors only; grad *= t twice on weights
            tW = np.abs(W) + 0.01
            norm = np.sqrt(np.sum((tW * gW) ** 2) + np.sum(gb**2)) + 1e-16
            eW, eb = tW * tW * gW * (rho / norm), gb * (rho / norm)
        g_hat = problem.grad(np.concatenate([(W + eW).ravel(), b + eb]), idx)
        d = g_hat + lam * theta  # SGD's weight decay at the restored (unperturbed) parameters
        buf = d.copy() if buf is None else momentum * buf + d
        theta = theta - lr * buf
    return theta


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_reproduces_its_implementation_step_for_step(name):
    problem = _softmax_problem()
    p = preset(name, problem, rho=0.1, momentum=0.9)
    run = refsam.train(problem, p.sam, 0.2, 12, batch_size=8, seed=4, **p.train_kwargs())
    expected = _reference(name, problem, run.theta0, run.batches, 0.2, 0.1, 0.9)
    np.testing.assert_allclose(run.theta_final, expected, rtol=1e-13, atol=1e-15)
    others = [refsam.train(problem, preset(o, problem, 0.1).sam, 0.2, 12, batch_size=8, seed=4,
                           momentum=0.9).theta_final for o in sorted(PRESETS) if o != name]
    assert all(np.max(np.abs(o - run.theta_final)) > 1e-6 for o in others)  # the presets differ


def test_a_preset_refuses_a_problem_in_the_other_weight_decay_mode():
    coupled = refsam.Problem(refsam.LogisticRegression(), X[:, :2], Y % 2, 0.1, regularization="coupled")
    with pytest.raises(ValueError, match="computes weight decay in the optimizer"):
        preset("pytorch-sam", coupled, 0.05)
    with pytest.raises(ValueError, match="`name` must be one of"):
        preset("jax-sam", _softmax_problem(), 0.05)
