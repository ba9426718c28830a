"""Rung 1 for the public implementations' conventions: the denominator epsilon, ASAM with κ = 0
(including θ_i = 0), ASAM's T on some coordinates only, and label smoothing — every new derivative
against autograd (and, where autograd's |·| is not the oracle, against central differences)."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import refsam
from refsam import SAM
from refsam.kit.testing import check_grads
from refsam.tolerances import RTOL_FD_DERIVATIVE, RTOL_JACOBIAN, rel_err


def _theta_g(seed, d=7, zeros=()):
    rng = np.random.default_rng(seed)
    theta, g = rng.standard_normal(d), rng.standard_normal(d)
    theta[list(zeros)] = 0.0
    return theta, g


def _assert_jacobians(sam, theta, g):
    v = np.random.default_rng(1).standard_normal((theta.shape[0], 3))
    J_g = autograd.jacobian(lambda gg: sam.perturbation(theta, gg))(g)
    J_theta = autograd.jacobian(lambda t: sam.perturbation(t, g))(theta)
    scale = np.abs(J_g).max()
    assert scale > 1e-3
    assert rel_err(sam.jacobian_g(theta, g), J_g) <= RTOL_JACOBIAN
    assert np.allclose(sam.jacobian_theta(theta, g), J_theta, rtol=RTOL_JACOBIAN, atol=RTOL_JACOBIAN * scale)
    assert rel_err(sam.jvp_g(theta, g, v), J_g @ v) <= RTOL_JACOBIAN
    assert np.allclose(sam.jvp_theta(theta, g, v), J_theta @ v, rtol=0, atol=RTOL_JACOBIAN * scale)
    assert np.allclose(sam.vjp_theta(theta, g, v), J_theta.T @ v, rtol=0, atol=RTOL_JACOBIAN * scale)
    return J_theta


@pytest.mark.parametrize("rule", ["sam", "asam"])
@pytest.mark.parametrize("norm_eps", [1e-12, 0.3])
def test_the_denominator_epsilon_s_jacobians_equal_autograd(rule, norm_eps):
    sam = SAM(0.1, rule, kappa=0.05, norm_eps=norm_eps)
    theta, g = _theta_g(0)
    _assert_jacobians(sam, theta, g)
    norm = np.linalg.norm(sam._t(theta, 7) * g)
    eps = sam.perturbation(theta, g)
    assert rel_err(eps, SAM(0.1, rule, kappa=0.05).perturbation(theta, g) * norm / (norm + norm_eps)) <= 1e-14


def test_with_a_denominator_epsilon_a_zero_gradient_gives_no_perturbation_and_the_limit_jacobian():
    theta, _ = _theta_g(1)
    for sam in (SAM(0.1, "sam", norm_eps=1e-3), SAM(0.1, "asam", kappa=0.01, norm_eps=1e-3)):
        g0 = np.zeros(7)
        assert not np.any(sam.perturbation(theta, g0))
        t = sam._t(theta, 7)
        np.testing.assert_allclose(sam.jacobian_g(theta, g0), np.diag(0.1 / 1e-3 * t**2), rtol=1e-15)
        h, v = 1e-12, np.random.default_rng(2).standard_normal(7)  # ε(θ; hv)/h → (∂ε/∂g) v, error ~h‖v‖/e
        assert rel_err(sam.perturbation(theta, h * v) / h, sam.jvp_g(theta, g0, v)) <= 1e-6
        assert not np.any(sam.jacobian_theta(theta, g0))
    with pytest.raises(refsam.ZeroGradientError):
        SAM(0.1, "sam").perturbation(theta, np.zeros(7))  # e = 0: still undefined


def test_asam_with_kappa_zero_is_smooth_and_exact_at_zero_coordinates():
    """κ = 0: T² = diag(θ²), ‖Tg‖² = Σ θ_i² g_i²: smooth in θ, also at θ_i = 0, where the Jacobians must
    equal those of the same rule written with θ² (no |·| for autograd to differentiate at 0)."""
    sam = SAM(0.2, "asam", kappa=0.0, norm_eps=1e-12)
    theta, g = _theta_g(3, zeros=(1, 4))

    def eps_squared(t, gg):  # the same rule written without |θ|
        s2 = anp.sum(t**2 * gg**2)
        return 0.2 * t**2 * gg / (anp.sqrt(s2) + 1e-12)

    np.testing.assert_allclose(sam.perturbation(theta, g), eps_squared(theta, g), rtol=1e-14)
    J_theta = autograd.jacobian(lambda t: eps_squared(t, g))(theta)
    J_g = autograd.jacobian(lambda gg: eps_squared(theta, gg))(g)
    assert rel_err(sam.jacobian_theta(theta, g), J_theta) <= RTOL_JACOBIAN
    assert rel_err(sam.jacobian_g(theta, g), J_g) <= RTOL_JACOBIAN
    assert np.all(sam.jacobian_theta(theta, g)[:, [1, 4]][[1, 4]] == 0)  # nothing moves at θ_i = 0 ...
    h = 1e-6  # ... and central differences in θ_1 through the zero agree
    e1 = np.eye(7)[1]
    fd = (sam.perturbation(theta + h * e1, g) - sam.perturbation(theta - h * e1, g)) / (2 * h)
    assert np.max(np.abs(fd - sam.jacobian_theta(theta, g)[:, 1])) <= RTOL_FD_DERIVATIVE


def test_asam_on_masked_coordinates_only():
    mask = np.array([True, True, False, True, False, True, True])
    sam = SAM(0.3, "asam", kappa=0.01, norm_eps=1e-16, t_mask=mask)
    theta, g = _theta_g(4)
    J_theta = _assert_jacobians(sam, theta, g)
    assert not np.any(J_theta[:, ~mask][~mask])  # t = 1 off the mask: no T term from those coordinates
    t = np.where(mask, np.abs(theta) + 0.01, 1.0)
    expected = 0.3 * t**2 * g / (np.linalg.norm(t * g) + 1e-16)
    np.testing.assert_allclose(sam.perturbation(theta, g), expected, rtol=1e-14)


@pytest.mark.parametrize("model", [refsam.LogisticRegression(0.1), refsam.SoftmaxRegression(3, 0.2),
                                   refsam.MLP((3, 4, 3), "softplus", label_smoothing=0.15)],
                         ids=["logistic", "softmax", "mlp"])
def test_label_smoothed_models_pass_the_derivative_oracle(model):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((8, 3))
    y = rng.integers(0, model.n_classes, 8)
    theta = 0.5 * rng.standard_normal(model.n_params(3))
    check_grads(model, theta, X, y, rng.uniform(0.1, 1.0, 8))
    plain = type(model)(*([] if isinstance(model, refsam.LogisticRegression) else
                          [model.n_classes] if isinstance(model, refsam.SoftmaxRegression) else
                          [model.sizes, "softplus"]))
    assert rel_err(model.losses(theta, X, y), plain.losses(theta, X, y)) > 1e-3  # smoothing matters
    assert refsam.model_from_spec(model.spec()).spec() == model.spec()


def test_label_smoothing_targets_the_smoothed_distribution():
    """Logistic with smoothing α is softmax cross-entropy against q = (1 − α) e_y + α/2 on logits (0, z)."""
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((5, 2)), rng.integers(0, 2, 5)
    theta = rng.standard_normal(3)
    z = X @ theta[:-1] + theta[-1]
    q1 = 0.9 * y + 0.05
    expected = -(q1 * np.log(1 / (1 + np.exp(-z))) + (1 - q1) * np.log(1 / (1 + np.exp(z))))
    np.testing.assert_allclose(refsam.LogisticRegression(0.1).losses(theta, X, y), expected, rtol=1e-12)


def test_bias_masks_mark_exactly_the_bias_coordinates():
    assert refsam.LogisticRegression().bias_mask(3).tolist() == [False, False, False, True]
    assert refsam.SoftmaxRegression(2).bias_mask(1).tolist() == [False, False, True, True]
    mlp = refsam.MLP((2, 3, 2))
    mask = mlp.bias_mask(2)
    theta = np.arange(mlp.n_params(2), dtype=float)
    biases = np.concatenate([b for _, b in mlp.unpack(theta)])
    np.testing.assert_array_equal(theta[mask], biases)


@pytest.mark.parametrize("rule", ["sam", "asam"])
def test_at_an_exactly_zero_gradient_with_norm_eps_the_jacobian_is_rho_t_squared_over_e(rule):
    """ε(g) = ρ T²g/(‖Tg‖ + e) = (ρ/e) T² g + O(‖g‖²) near g = 0, so ∂ε/∂g(0) = ρT²/e. Found by the fuzz
    suite: the perturbation returned the constant 0·s there, so autograd (the autodiff oracle) saw a
    zero Jacobian and disagreed with the adjoint by 1e15. Checked against central differences."""
    sam = SAM(0.25, rule, kappa=0.05, norm_eps=1e-6)
    theta, _ = _theta_g(3)
    g = np.zeros_like(theta)
    expected = np.diag(0.25 * sam._t(theta, theta.size) ** 2 / 1e-6)
    autograd_jacobian = autograd.jacobian(lambda gg: sam.perturbation(theta, gg))(g)
    h = 1e-12  # ‖h‖ ≪ e: the O(‖g‖²) term is ~h/e relative
    def central(e):
        return (sam.perturbation(theta, h * e) - sam.perturbation(theta, -h * e)) / (2 * h)

    differences = np.column_stack([central(e)
                                   for e in np.eye(theta.size)])
    assert rel_err(differences, expected) <= 1e-5
    assert rel_err(autograd_jacobian, expected) <= RTOL_JACOBIAN
    assert rel_err(sam.jacobian_g(theta, g), expected) <= RTOL_JACOBIAN
