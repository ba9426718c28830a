"""Adam, AdamW, gradient clipping and learning-rate schedules: each against a transliteration of the public
code's algorithm (torch.optim.Adam/AdamW's single-tensor loop, optax's scale_by_adam with eps_root,
clip_grad_norm_ and clip_by_global_norm, torch's schedulers' closed forms), against real torch where it
is installed, and their JVP/VJP against finite differences and each other."""

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_STEP as RTOL_PER_STEP  # one step, the same arithmetic reordered
from refsam.tolerances import rel_err
from refsam.training import (
    GradientClipping,
    cosine_annealing_lr,
    linear_lr,
    linear_warmup_cosine_lr,
    sam_gradient,
    step_lr,
)

RNG = np.random.default_rng(0)


def torch_adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """torch.optim.adam._single_tensor_adam (amsgrad=False, maximize=False), transliterated to numpy:
    the order of torch's operations, step counted from 1."""
    param, exp_avg, exp_avg_sq = param.copy(), exp_avg.copy(), exp_avg_sq.copy()
    if decoupled:
        param *= 1 - lr * weight_decay  # AdamW: param.mul_(1 - lr * weight_decay)
    elif weight_decay != 0:
        grad = grad + weight_decay * param  # Adam: grad = grad.add(param, alpha=weight_decay)
    exp_avg += (grad - exp_avg) * (1 - beta1)  # exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad  # mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bias_correction2) + eps
    param += -step_size * exp_avg / denom  # param.addcdiv_(exp_avg, denom, value=-step_size)
    return param, exp_avg, exp_avg_sq


def optax_adam_update(grad, mu, nu, count, b1, b2, eps, eps_root):
    """optax.scale_by_adam's update (count from 1 after its increment), transliterated."""
    mu = (1 - b1) * grad + b1 * mu
    nu = (1 - b2) * grad**2 + b2 * nu
    mu_hat = mu / (1 - b1**count)
    nu_hat = nu / (1 - b2**count)
    return mu_hat / (np.sqrt(nu_hat + eps_root) + eps), mu, nu


@pytest.mark.parametrize("cls", [refsam.Adam, refsam.AdamW])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_update_is_torchs_algorithm(cls, weight_decay):
    d, steps = 7, 6
    opt = cls(0.01, betas=(0.85, 0.99), eps=1e-7, weight_decay=weight_decay)
    theta = RNG.standard_normal(d)
    state = opt.init_state(theta)
    ref_theta, m, v = theta.copy(), np.zeros(d), np.zeros(d)
    for t in range(steps):
        grad = RNG.standard_normal(d)
        theta, state = opt.update(t, 0.01, theta, state, grad)
        ref_theta, m, v = torch_adam_step(ref_theta, grad, m, v, t + 1, 0.01, 0.85, 0.99, 1e-7, weight_decay,
                                          cls is refsam.AdamW)
        assert rel_err(theta, ref_theta) <= RTOL_PER_STEP
        assert rel_err(state[0], m) <= RTOL_PER_STEP and rel_err(state[1], v) <= RTOL_PER_STEP


def test_adam_eps_root_is_optaxs():
    d = 5
    opt = refsam.Adam(0.1, betas=(0.9, 0.999), eps=1e-8, eps_root=1e-6)
    theta = RNG.standard_normal(d)
    state, mu, nu = opt.init_state(theta), np.zeros(d), np.zeros(d)
    for t in range(4):
        grad = RNG.standard_normal(d) * 10.0 ** (-3 * t)  # down to round-off-small second moments
        new_theta, state = opt.update(t, 0.1, theta, state, grad)
        update, mu, nu = optax_adam_update(grad, mu, nu, t + 1, 0.9, 0.999, 1e-8, 1e-6)
        assert rel_err(new_theta, theta - 0.1 * update) <= RTOL_PER_STEP
        theta = new_theta


@pytest.mark.parametrize("cls", [refsam.Adam, refsam.AdamW])
def test_adam_jvp_is_the_derivative_of_update_and_vjp_its_transpose(cls):
    d, k, t, lr = 6, 3, 4, 0.05
    opt = cls(lr, betas=(0.8, 0.95), eps=1e-3, weight_decay=np.linspace(0.0, 0.1, d))
    theta, grad = RNG.standard_normal(d), RNG.standard_normal(d)
    state = (RNG.standard_normal(d), RNG.random(d) + 0.1)
    dtheta, dgrad = RNG.standard_normal((d, k)), RNG.standard_normal((d, k))
    dstate = (RNG.standard_normal((d, k)), RNG.standard_normal((d, k)))
    jt, (jm, jv) = opt.jvp(t, lr, theta, state, grad, dtheta, dstate, dgrad)
    h = 1e-6
    for col in range(k):
        def shifted(sign, col=col):
            return opt.update(t, lr, theta + sign * h * dtheta[:, col],
                              (state[0] + sign * h * dstate[0][:, col],
                               state[1] + sign * h * dstate[1][:, col]),
                              grad + sign * h * dgrad[:, col])
        (tp, (mp, vp)), (tm, (mm, vm)) = shifted(1.0), shifted(-1.0)
        assert rel_err(jt[:, col], (tp - tm) / (2 * h)) <= 1e-7
        assert rel_err(jm[:, col], (mp - mm) / (2 * h)) <= 1e-7
        assert rel_err(jv[:, col], (vp - vm) / (2 * h)) <= 1e-7
    ct_theta = RNG.standard_normal((d, k))
    ct_state = (RNG.standard_normal((d, k)), RNG.standard_normal((d, k)))
    back_theta, (back_m, back_v), back_grad = opt.vjp(t, lr, theta, state, grad, ct_theta, ct_state)
    forward = np.sum(ct_theta * jt) + np.sum(ct_state[0] * jm) + np.sum(ct_state[1] * jv)
    backward = (np.sum(back_theta * dtheta) + np.sum(back_m * dstate[0]) + np.sum(back_v * dstate[1])
                + np.sum(back_grad * dgrad))
    assert abs(forward - backward) <= 1e-12 * max(abs(forward), 1.0)


def test_adam_weight_decay_tangent_matches_differences_in_lambda():
    d, t, lr, lam = 5, 2, 0.05, 0.03
    theta, grad = RNG.standard_normal(d), RNG.standard_normal(d)
    state = (RNG.standard_normal(d), RNG.random(d) + 0.1)
    for cls in (refsam.Adam, refsam.AdamW):
        zero = (np.zeros((d, 1)), np.zeros((d, 1)))
        jt, _ = cls(lr, eps=1e-3, weight_decay=lam).jvp(t, lr, theta, state, grad, np.zeros((d, 1)), zero,
                                                         np.zeros((d, 1)), dlam=np.array([1.0]))
        h = 1e-6
        plus = cls(lr, eps=1e-3, weight_decay=lam + h).update(t, lr, theta, state, grad)[0]
        minus = cls(lr, eps=1e-3, weight_decay=lam - h).update(t, lr, theta, state, grad)[0]
        assert rel_err(jt[:, 0], (plus - minus) / (2 * h)) <= 1e-7


@pytest.mark.parametrize("kwargs, match", [
    ({"amsgrad": True}, "amsgrad"),
    ({"betas": (1.0, 0.9)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
    ({"eps": -1.0}, "eps"),
    ({"eps": 0.0}, "eps_root"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"lr": 0.0}, "lr"),
])
def test_adam_refuses_bad_settings_with_one_line_messages(kwargs, match):
    for cls in (refsam.Adam, refsam.AdamW):
        with pytest.raises(refsam.InvalidInputError, match=match) as info:
            cls(**kwargs)
        assert "\n" not in str(info.value)


def test_adamw_default_weight_decay_is_torchs():
    assert refsam.AdamW().weight_decay == 1e-2 and refsam.Adam().weight_decay == 0.0


# -- clipping ---------------------------------------------------------------------------------------------
def test_clipping_conventions_are_torchs_and_optaxs():
    g = np.array([3.0, 4.0])  # ‖g‖ = 5
    torch_clip = GradientClipping(2.0, "torch")
    assert np.allclose(torch_clip.apply(g), g * 2.0 / (5.0 + 1e-6), rtol=1e-15)
    assert np.array_equal(GradientClipping(10.0, "torch").apply(g), g)  # min(1, 10/5.000001) = 1
    assert np.allclose(GradientClipping(2.0, "optax").apply(g), g * 2.0 / 5.0, rtol=1e-15)
    assert np.array_equal(GradientClipping(5.0, "optax").apply(g), g)  # c / max(‖g‖, c) = 1 at ‖g‖ = c


@pytest.mark.parametrize("convention", ["torch", "optax"])
def test_clipping_jacobian_is_the_derivative_on_the_clipped_side(convention):
    clip = GradientClipping(0.5, convention)
    g, V = RNG.standard_normal(6), RNG.standard_normal((6, 3))
    assert clip.clipped(g)
    h = 1e-6
    fd = np.stack([(clip.apply(g + h * V[:, k]) - clip.apply(g - h * V[:, k])) / (2 * h)
                   for k in range(3)], 1)
    assert rel_err(clip.jvp(g, V), fd) <= 1e-8
    J = clip.jvp(g, np.eye(6))
    assert np.allclose(J, J.T, rtol=0, atol=1e-15)  # symmetric: the VJP is the same map
    unclipped = GradientClipping(100.0, convention)
    assert np.array_equal(unclipped.jvp(g, V), V)


def test_clipping_warns_on_its_kink():
    g = np.array([3.0, 4.0])
    with pytest.warns(RuntimeWarning, match="round-off of the clipping threshold"):
        GradientClipping(5.0 + 1e-6, "torch").warn_if_on_kink(g, 0)


@pytest.mark.parametrize("bad", [0.0, -1.0, "5", True])
def test_train_refuses_a_bad_clip(bad):
    X, y, _ = refsam.make_gaussian_classification(n=8, n_features=2, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    with pytest.raises(refsam.InvalidInputError, match="clip_grad_norm"):
        refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.1), 2, clip_grad_norm=bad)


def test_a_clipped_run_clips_the_descent_gradient_before_the_optimizer():
    X, y, _ = refsam.make_gaussian_classification(n=10, n_features=2, seed=1)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, l2=0.01)
    sam, opt = refsam.SAM(0.1), refsam.SGD(0.5, momentum=0.9, weight_decay=0.1)
    run = refsam.train(problem, sam, opt, 3, clip_grad_norm=0.05)
    assert run.config["clip_grad_norm"] == {"max_norm": 0.05, "convention": "torch"}
    theta, buf = run.theta0, np.zeros(problem.d)
    for t in range(3):  # written out: clip g̃ (with the loss's l2), then SGD adds its own λθ, momentum
        g_tilde = sam_gradient(problem, sam, theta).descent
        g_tilde = g_tilde * min(1.0, 0.05 / (np.linalg.norm(g_tilde) + 1e-6))
        d = g_tilde + 0.1 * theta
        buf = d if t == 0 else 0.9 * buf + d
        theta = theta - 0.5 * buf
        assert rel_err(run.thetas[t + 1], theta) <= RTOL_PER_STEP
    loaded_config = refsam.replay(problem, run).config
    assert loaded_config["clip_grad_norm"] == run.config["clip_grad_norm"]


# -- schedules --------------------------------------------------------------------------------------------
def test_schedules_follow_torchs_formulas():
    assert np.allclose(step_lr(0.1, 7, 3, 0.5), [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rtol=1e-15)
    t = np.arange(10)
    assert np.allclose(cosine_annealing_lr(0.2, 10, eta_min=0.01),
                       0.01 + 0.19 * (1 + np.cos(np.pi * t / 10)) / 2, rtol=1e-15)
    assert np.allclose(linear_lr(1.0, 8, 0.25, 1.0, 4), [0.25, 0.4375, 0.625, 0.8125, 1, 1, 1, 1], rtol=1e-15)
    warm = linear_warmup_cosine_lr(1.0, 10, 4, start_factor=0.1)
    assert np.allclose(warm[:4], [0.1, 0.325, 0.55, 0.775], rtol=1e-15)
    assert np.allclose(warm[4:], (1 + np.cos(np.pi * np.arange(6) / 6)) / 2, rtol=1e-15)
    assert np.all(warm > 0)  # an optimizer accepts every schedule the helpers make


def test_schedules_equal_torchs_schedulers():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def rates(make, lr, steps):
        opt = torch.optim.SGD([param], lr=lr)
        scheduler = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        return np.array(out)

    sched = torch.optim.lr_scheduler
    assert rel_err(step_lr(0.1, 9, 2, 0.3), rates(lambda o: sched.StepLR(o, 2, 0.3), 0.1, 9)) <= 1e-15
    assert rel_err(cosine_annealing_lr(0.1, 12, eta_min=1e-3),
                   rates(lambda o: sched.CosineAnnealingLR(o, 12, 1e-3), 0.1, 12)) <= 1e-12
    assert rel_err(linear_lr(0.1, 9, 0.2, 1.0, 5),
                   rates(lambda o: sched.LinearLR(o, 0.2, 1.0, 5), 0.1, 9)) <= 1e-14
    warm = rates(lambda o: sched.SequentialLR(o, [sched.LinearLR(o, 0.01, 1.0, 3),
                                                  sched.CosineAnnealingLR(o, 7)],
                                              milestones=[3]), 0.1, 10)
    assert rel_err(linear_warmup_cosine_lr(0.1, 10, 3, 0.01), warm) <= 1e-12


@pytest.mark.parametrize("cls, torch_name", [(refsam.Adam, "Adam"), (refsam.AdamW, "AdamW")])
def test_adam_update_equals_real_torch_optim(cls, torch_name):
    torch = pytest.importorskip("torch")
    d = 6
    theta0 = RNG.standard_normal(d)
    param = torch.nn.Parameter(torch.tensor(theta0))
    reference = getattr(torch.optim, torch_name)([param], lr=0.03, betas=(0.8, 0.97), eps=1e-6,
                                                 weight_decay=0.02)
    opt = cls(0.03, betas=(0.8, 0.97), eps=1e-6, weight_decay=0.02)
    theta, state = theta0, opt.init_state(theta0)
    for t in range(5):
        grad = RNG.standard_normal(d)
        param.grad = torch.tensor(grad)
        reference.step()
        theta, state = opt.update(t, 0.03, theta, state, grad)
        assert rel_err(theta, param.detach().numpy()) <= RTOL_PER_STEP


def test_linear_lr_refuses_factors_above_one_like_torch():
    with pytest.raises(refsam.InvalidInputError, match=r"`start_factor` must lie in \(0, 1\]"):
        refsam.training.linear_lr(0.1, 10, start_factor=2.0)
    with pytest.raises(refsam.InvalidInputError, match=r"`end_factor` must lie in \(0, 1\]"):
        refsam.training.linear_lr(0.1, 10, end_factor=1.5)


def test_clip_grad_norm_takes_a_numpy_integer_like_a_python_int():
    X, y, _ = refsam.make_gaussian_classification(n=8, n_features=2, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    runs = [refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.1), 2, clip_grad_norm=c)
            for c in (1, np.int64(1))]
    np.testing.assert_array_equal(runs[0].thetas, runs[1].thetas)
    assert runs[1].clipping() is not None
