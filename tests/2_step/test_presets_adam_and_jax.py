"""The presets around Adam/AdamW and the JAX SAM code's defaults, each against a transliteration of what the
implementation computes (google-research/sam's train_step: the loss with ½λΣθ² over every parameter,
dual_vector, the gradient at the noised model, clip_by_global_norm at 5.0, Flax's Nesterov momentum)."""

import numpy as np
import pytest

import refsam
from refsam.tolerances import rel_err
from refsam.training import GradientClipping, preset, sam_gradient

X, y, _ = refsam.make_gaussian_classification(n=16, n_features=3, seed=4)


def problem():
    return refsam.Problem(refsam.LogisticRegression(), X, y)


def test_jax_sam_preset_follows_the_official_train_step():
    """One step of google-research/sam's train_step, written out: λ on every parameter (biases too) in the
    loss, ε = ρ g/‖g‖, the gradient of the same loss at θ + ε, clipped to norm c where ‖g‖ ≥ c, Nesterov."""
    lam, rho, lr, beta, c = 0.05, 0.1, 0.5, 0.9, 0.2
    p = preset("jax-sam", problem(), rho, lr, lam, momentum=beta, gradient_clipping=c)
    assert p.clip_grad_norm == GradientClipping(c, "optax") and p.optimizer.nesterov
    run = refsam.train(p.problem, p.sam, p.optimizer, 3, clip_grad_norm=p.clip_grad_norm)
    base = problem()
    theta, momentum = run.theta0, np.zeros(base.d)
    clipped = 0
    for t in range(3):
        def loss_grad(th):
            return base.grad(th) + lam * th  # ∇(loss + ½λ Σ θ_i²), every coordinate
        g = loss_grad(theta)
        g = loss_grad(theta + rho * g / np.linalg.norm(g))  # dual_vector, then the noised model's gradient
        norm = np.linalg.norm(g)
        if not norm < c:  # clip_by_global_norm: trigger = g_norm < c
            g, clipped = g / norm * c, clipped + 1
        momentum = beta * momentum + g  # flax.optim.Momentum(nesterov=True)
        theta = theta - lr * (g + beta * momentum)
        assert rel_err(run.thetas[t + 1], theta) <= 1e-12
    assert clipped >= 1  # the clip acted: the check covers it


def test_jax_sam_preset_weights_only_matches_its_flag():
    p = preset("jax-sam", problem(), 0.05, 0.1, 0.01, weights_only=True)
    bias = problem().model.bias_mask(problem().p)
    assert np.all(p.problem.l2[bias] == 0.0) and np.all(p.problem.l2[~bias] == 0.01)
    assert preset("jax-sam", problem(), 0.05, 0.1, 0.01).problem.l2 == 0.01  # default: biases decayed
    assert preset("jax-sam", problem(), 0.05, 0.1, gradient_clipping=0).clip_grad_norm is None
    assert preset("jax-sam", problem(), 0.05, 0.1).clip_grad_norm == GradientClipping(5.0, "optax")


@pytest.mark.parametrize("name, cls, eps_g", [("pytorch-sam-adam", refsam.Adam, 1e-12),
                                              ("pytorch-sam-adamw", refsam.AdamW, 1e-12),
                                              ("optax-adamw-sam", refsam.AdamW, 0.0)])
def test_adam_presets_build_the_wrapped_optimizer(name, cls, eps_g):
    p = preset(name, problem(), 0.05, 1e-3, 0.02)
    assert type(p.optimizer) is cls and p.optimizer.weight_decay == 0.02
    assert p.optimizer.betas == (0.9, 0.999) and p.optimizer.eps == 1e-8 and p.optimizer.eps_root == 0.0
    assert p.sam.rule == "sam" and p.sam.norm_eps == eps_g and p.clip_grad_norm is None
    run = refsam.train(p.problem, p.sam, p.optimizer, 2)
    theta, m, v = run.theta0, 0.0, 0.0
    for t in range(2):  # the wrapper's order: ε from g, the gradient at θ + ε, then the optimizer at θ
        g_tilde = sam_gradient(p.problem, p.sam, theta).descent
        a = g_tilde + (0.0 if cls is refsam.AdamW else 0.02 * theta)
        if cls is refsam.AdamW:
            theta = theta * (1 - 1e-3 * 0.02)
        m, v = 0.9 * m + 0.1 * a, 0.999 * v + 0.001 * a * a
        theta = theta - 1e-3 * (m / (1 - 0.9 ** (t + 1))) / (np.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-8)
        assert rel_err(run.thetas[t + 1], theta) <= 1e-12


@pytest.mark.parametrize("kwargs, match", [({"m_sharpness": 2}, "m_sharpness"), ({"weights_only": True},
                                                                                "weights_only"),
                                           ({"gradient_clipping": -1.0}, "gradient_clipping")])
def test_preset_refuses_options_of_another_implementation(kwargs, match):
    with pytest.raises(refsam.InvalidInputError, match=match):
        preset("pytorch-sam-adamw", problem(), 0.05, 1e-3, **kwargs)
