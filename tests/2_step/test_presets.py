"""The presets reproduce what each public SAM implementation computes, step for step: the reference below
writes each one's step out from its documented conventions (per-tensor arithmetic, as that code does it)
and refsam's run must match it to round-off."""

import numpy as np
import pytest

import refsam
from refsam.training import PRESETS, preset

X, Y, _ = refsam.make_gaussian_classification(n=24, n_features=3, n_classes=3, seed=9)


LAMBDA = 5e-4  # torch.optim.SGD's weight_decay in the PyTorch presets


def _softmax_problem():
    return refsam.Problem(refsam.SoftmaxRegression(3), X, Y)


def _reference(name, problem, theta0, batches, lr, rho, momentum, lam):
    """The public code's step, for softmax regression with parameters (weight matrix W, bias b):
    the SAM wrapper / ASAM's first step from the loss gradient, the gradient at the perturbed point, θ
    restored, then torch.optim.SGD(momentum, weight_decay=λ) on it."""
    p, K = problem.p, 3
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


# the SGD presets (the Adam/AdamW ones: tests/2_step/test_presets_adam_and_jax.py)
TORCH_PRESETS = ["asam-official", "pytorch-sam", "pytorch-sam-adaptive"]
assert set(TORCH_PRESETS) < set(PRESETS)


@pytest.mark.parametrize("name", TORCH_PRESETS)
def test_each_preset_reproduces_its_implementation_step_for_step(name):
    problem = _softmax_problem()
    p = preset(name, problem, rho=0.1, lr=0.2, weight_decay=LAMBDA, momentum=0.9)
    assert p.name == name and p.problem is problem  # the PyTorch presets leave the loss as it is
    assert p.optimizer.config() == {"name": "SGD", "momentum": 0.9, "dampening": 0.0, "nesterov": False,
                                    "weight_decay": LAMBDA}
    run = refsam.train(p.problem, p.sam, p.optimizer, 12, batch_size=8, seed=4)
    expected = _reference(name, problem, run.theta0, run.batches, 0.2, 0.1, 0.9, LAMBDA)
    np.testing.assert_allclose(run.theta_final, expected, rtol=1e-13, atol=1e-15)
    others = []
    for o in TORCH_PRESETS:
        if o != name:
            q = preset(o, problem, 0.1, 0.2, LAMBDA, momentum=0.9)
            others.append(refsam.train(q.problem, q.sam, q.optimizer, 12, batch_size=8, seed=4).theta_final)
    assert all(np.max(np.abs(o - run.theta_final)) > 1e-6 for o in others)  # the presets differ


@pytest.mark.parametrize("weights_only", [False, True])
def test_the_jax_preset_reproduces_the_jax_sam_step_for_step(weights_only):
    """The JAX/Flax SAM code: per device (a chunk of m samples) the loss plus ½λ Σ θ² over every parameter
    (its default; over the weight matrix only with --no_weight_decay_on_bn); ε = ρ g/‖g‖ with no epsilon;
    the gradient at the device's own perturbed point; the devices' gradients averaged, then clipped to
    global norm 5.0 (g·c/‖g‖ where ‖g‖ ≥ c); Flax's Nesterov momentum m ← β m + g (from m = 0),
    θ ← θ − lr (g + β m)."""
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X, Y)
    p = preset("jax-sam", problem, rho=0.05, lr=0.1, weight_decay=5e-3, momentum=0.9, m_sharpness=4,
               weights_only=weights_only, gradient_clipping=0.45)
    assert p.optimizer.nesterov and p.sam.m_sharpness == 4 and p.sam.norm_eps == 0.0
    run = refsam.train(p.problem, p.sam, p.optimizer, 9, batch_size=8, seed=2,
                       clip_grad_norm=p.clip_grad_norm)
    lam_weights = np.where(problem.model.bias_mask(3), 0.0, 5e-3) if weights_only else 5e-3
    clipped = 0

    def loss_grad(theta, rows):
        return problem.grad(theta, rows) + lam_weights * theta  # ∇(loss + ½λ Σ_weights θ²)

    theta, momentum_buffer = run.theta0.copy(), np.zeros_like(run.theta0)
    for idx in run.batches:
        device_grads = []
        for rows in (idx[:4], idx[4:]):  # two devices of 4 samples
            g = loss_grad(theta, rows)
            noised = theta + 0.05 * (g / np.sqrt(np.sum(g**2)))
            device_grads.append(loss_grad(noised, rows))
        grad = np.mean(device_grads, axis=0)  # pmean over the devices
        norm = np.sqrt(np.sum(grad**2))
        if not norm < 0.45:  # clip_by_global_norm: trigger = g_norm < c
            grad, clipped = grad / norm * 0.45, clipped + 1
        momentum_buffer = 0.9 * momentum_buffer + grad
        theta = theta - 0.1 * (grad + 0.9 * momentum_buffer)
    np.testing.assert_allclose(run.theta_final, theta, rtol=1e-13, atol=1e-15)
    assert 0 < clipped < len(run.batches)  # the clip acted on some steps, not all: both sides are checked


def test_the_jax_preset_needs_its_weight_decay_layout():
    """jax-sam puts λ into the loss — on every parameter by default (the official train_step decays
    biases and batch-norm scales too), on the weight matrices only with ``weights_only`` — and none into
    the optimizer; it builds that layout itself and refuses a problem that already carries an L2 term."""
    problem = _softmax_problem()
    assert preset("jax-sam", problem, 0.05, 0.1, weight_decay=5e-3).problem.l2 == 5e-3
    p = preset("jax-sam", problem, 0.05, 0.1, weight_decay=5e-3, weights_only=True)
    np.testing.assert_array_equal(p.problem.l2, np.where(problem.model.bias_mask(3), 0.0, 5e-3))
    assert p.optimizer.weight_decay == 0.0 and problem.l2 == 0.0  # the caller's problem is left alone
    assert p.problem.model is problem.model and p.problem.data_fingerprint() == problem.data_fingerprint()
    with_l2 = refsam.Problem(refsam.SoftmaxRegression(3), X, Y,
                             l2=np.where(problem.model.bias_mask(3), 0.0, 5e-3))
    with pytest.raises(ValueError,
                       match="build `problem` without `l2` and pass `weight_decay` to the preset"):
        preset("jax-sam", with_l2, 0.05, 0.1, weight_decay=5e-3)
    with pytest.raises(ValueError, match="applies to the 'jax-sam' preset only"):
        preset("pytorch-sam", problem, 0.05, 0.1, m_sharpness=4)


def test_a_preset_refuses_a_problem_in_the_other_weight_decay_mode():
    """The PyTorch presets put λ into SGD's weight_decay; a problem with a loss-level L2 (0.1's coupled
    mode) is refused rather than decayed twice."""
    coupled = refsam.Problem(refsam.LogisticRegression(), X[:, :2], Y % 2, l2=0.1)
    with pytest.raises(ValueError, match=r"preset 'pytorch-sam' places the weight decay itself: build "
                                         r"`problem` without `l2`"):
        preset("pytorch-sam", coupled, 0.05, 0.1)
    with pytest.raises(ValueError, match="`name` must be one of"):
        preset("flax-sam", _softmax_problem(), 0.05, 0.1)
