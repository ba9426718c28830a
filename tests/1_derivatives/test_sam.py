"""SAM perturbation rules (contract §2, §5.2): ε(θ; g) and its hand-derived Jacobians.

Oracles: ``autograd.jacobian`` of ``SAM.perturbation`` (written in autograd.numpy) for ∂ε/∂g and ∂ε/∂θ|_g;
autograd through "θ ↦ ε(θ; ∇F(θ))" (with the gradient itself from autograd) for the total dε/dθ;
the defining geometry of each rule (‖ε‖ = ρ, ‖T⁻¹ε‖ = ρ, ε = ρg) for the perturbation itself.
"""

import autograd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam import SAM, ZeroGradientError
from refsam.kit.testing import problems, rel_err, sam_configs
from refsam.tolerances import RTOL_JACOBIAN, RTOL_NORMALISATION


def theta_and_gradient(seed, d=6):
    """A generic θ (no zero entries: |θ| is not differentiable at 0) and a generic non-zero g."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(d)
    theta[np.abs(theta) < 0.05] = 0.5
    return theta, rng.standard_normal(d)


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_jacobians_equal_autograd(rule, seed):
    sam = SAM(0.07, rule, kappa=0.3)
    theta, g = theta_and_gradient(seed)
    v = np.random.default_rng(seed + 100).standard_normal(theta.shape[0])
    J_g = autograd.jacobian(lambda gg: sam.perturbation(theta, gg))(g)  # ∂ε/∂g
    J_theta = autograd.jacobian(lambda t: sam.perturbation(t, g))(theta)  # ∂ε/∂θ at fixed g
    assert np.abs(J_g).max() > 1e-3
    assert rel_err(sam.jacobian_g(theta, g), J_g) <= RTOL_JACOBIAN
    assert np.allclose(sam.jacobian_theta(theta, g), J_theta, rtol=RTOL_JACOBIAN, atol=0)
    assert rel_err(sam.jvp_g(theta, g, v), J_g @ v) <= RTOL_JACOBIAN
    assert rel_err(sam.vjp_g(theta, g, v), J_g.T @ v) <= RTOL_JACOBIAN
    assert np.allclose(sam.jvp_theta(theta, g, v), J_theta @ v, rtol=RTOL_JACOBIAN, atol=0)
    assert np.allclose(sam.vjp_theta(theta, g, v), J_theta.T @ v, rtol=RTOL_JACOBIAN, atol=0)
    if rule == "asam":  # the T term is real for ASAM ...
        assert np.abs(J_theta).max() > 1e-3
        assert rel_err(sam.jacobian_theta(theta, g), J_theta) <= RTOL_JACOBIAN
    else:  # ... and exactly zero for SAM and USAM, which see θ only through g
        assert not np.any(sam.jacobian_theta(theta, g))


@settings(max_examples=15)
@given(sam_configs(min_rho=1e-3), st.integers(0, 2**16))
def test_hand_jacobians_equal_autograd_property(sam, seed):
    theta, g = theta_and_gradient(seed, d=4)
    J_g = autograd.jacobian(lambda gg: sam.perturbation(theta, gg))(g)
    J_theta = autograd.jacobian(lambda t: sam.perturbation(t, g))(theta)
    assert rel_err(sam.jacobian_g(theta, g), J_g) <= RTOL_JACOBIAN
    assert np.allclose(sam.jacobian_theta(theta, g), J_theta, rtol=RTOL_JACOBIAN,
                       atol=RTOL_JACOBIAN * np.abs(J_g).max())


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("penalty", ["weight_decay", "l2"])
def test_total_derivative_of_the_perturbation(rule, penalty):
    """dε/dθ of θ ↦ ε(θ; g(θ)) = ∂ε/∂g · ∂g/∂θ + ∂ε/∂θ|_g, where ∂g/∂θ = H (the optimizer's weight
    decay, which the perturbation never sees) or H + λI (a loss-level L2, ``Problem(l2=λ)``). Oracle:
    autograd through the whole map, with g from autograd of the objective."""
    X, y, _ = refsam.make_gaussian_classification(15, 3, n_classes=3, seed=1)
    # the optimizer's weight decay is not part of the problem: with it the problem has no L2 term
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X, y, l2=0.1 if penalty == "l2" else 0.0)
    sam = SAM(0.05, rule, kappa=0.2)
    theta, _ = theta_and_gradient(4, d=problem.d)
    lam = 0.1 if penalty == "l2" else 0.0

    def eps_of_theta(t):
        g = autograd.grad(problem.objective)(t) + lam * t
        return sam.perturbation(t, g)

    E_auto = autograd.jacobian(eps_of_theta)(theta)
    g = problem.grad(theta) + lam * theta
    dg_dtheta = problem.hessian(theta) + lam * np.eye(problem.d)
    E_hand = sam.jacobian_g(theta, g) @ dg_dtheta + sam.jacobian_theta(theta, g)
    assert np.abs(E_auto).max() > 1e-4
    assert rel_err(E_hand, E_auto) <= RTOL_JACOBIAN


@settings(max_examples=15)
@given(problems(kinds=("logistic", "softmax")), sam_configs(min_rho=1e-3), st.integers(0, 2**16))
def test_total_derivative_property(problem, sam, seed):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(problem.d) + 0.1
    lam = problem.l2  # the loss-level L2 (the perturbation sees it)
    g = problem.grad(theta) + lam * theta
    if np.linalg.norm(g) < 1e-6:  # too close to ‖g‖ = 0, where SAM is not differentiable
        return
    E_auto = autograd.jacobian(lambda t: sam.perturbation(t, autograd.grad(problem.objective)(t) + lam * t))(
        theta)
    J_g, dg_dtheta = sam.jacobian_g(theta, g), problem.hessian(theta) + lam * np.eye(problem.d)
    E_hand = J_g @ dg_dtheta + sam.jacobian_theta(theta, g)
    # E can vanish exactly (a gradient whose direction cannot turn); measure error on the factors' scale
    scale = max(np.abs(E_auto).max(), np.abs(J_g).max() * np.abs(dg_dtheta).max())
    assert np.allclose(E_hand, E_auto, rtol=RTOL_JACOBIAN, atol=RTOL_JACOBIAN * scale)


# -- the geometry of each rule ------------------------------------------------------------------------

@settings(max_examples=15)
@given(sam_configs(min_rho=1e-3), st.integers(0, 2**16), st.floats(1e-3, 1e3))
def test_perturbation_geometry(sam, seed, scale):
    """SAM: ‖ε‖ = ρ along g; ASAM: ‖T⁻¹ε‖ = ρ; USAM: ε = ρ g. SAM and ASAM ignore the scale of g."""
    theta, g = theta_and_gradient(seed, d=5)
    eps = sam.perturbation(theta, g)
    t = np.abs(theta) + sam.kappa
    if sam.rule == "sam":
        assert np.isclose(np.linalg.norm(eps), sam.rho, rtol=RTOL_NORMALISATION, atol=0)
        assert np.isclose(eps @ g, sam.rho * np.linalg.norm(g), rtol=RTOL_NORMALISATION)  # parallel to g
    elif sam.rule == "asam":
        assert np.isclose(np.linalg.norm(eps / t), sam.rho, rtol=RTOL_NORMALISATION, atol=0)
    else:
        assert np.array_equal(eps, sam.rho * g)
    if sam.rule != "usam":
        assert np.allclose(sam.perturbation(theta, scale * g), eps, rtol=RTOL_NORMALISATION, atol=0)


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
def test_rho_zero_gives_exactly_zero(rule):
    theta, g = theta_and_gradient(0)
    sam = SAM(0.0, rule)
    assert not np.any(sam.perturbation(theta, g))
    assert not np.any(sam.perturbation(theta, np.zeros_like(g)))  # even at g = 0: plain GD, no error
    assert not np.any(sam.jacobian_g(theta, g)) and not np.any(sam.jacobian_theta(theta, g))


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
def test_d_rho_is_the_derivative_in_rho(rule):
    """Every rule is linear in ρ, so ∂ε/∂ρ = ε/ρ; checked against ε at 2ρ and a central difference."""
    theta, g = theta_and_gradient(3)
    rho, h = 0.2, 1e-3
    d_rho = SAM(rho, rule).d_rho(theta, g)
    eps_plus, eps_minus = SAM(rho + h, rule).perturbation(theta, g), SAM(rho - h, rule).perturbation(theta, g)
    central = (eps_plus - eps_minus) / (2 * h)
    assert rel_err(d_rho, central) <= 1e-12  # linear: the difference quotient is exact up to rounding
    assert np.allclose(SAM(2 * rho, rule).perturbation(theta, g), 2 * SAM(rho, rule).perturbation(theta, g),
                       rtol=1e-15, atol=0)


def test_asam_with_large_kappa_approaches_sam_direction():
    """T = diag(|θ| + κ) ≈ κI for κ ≫ |θ|, so ASAM's ε → κ · (SAM's ε)."""
    theta, g = theta_and_gradient(5)
    kappa = 1e8
    eps_asam = SAM(0.1, "asam", kappa=kappa).perturbation(theta, g)
    eps_sam = SAM(0.1, "sam").perturbation(theta, g)
    assert rel_err(eps_asam / kappa, eps_sam) <= 1e-7


# -- ‖g‖ = 0 ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["sam", "asam"])
def test_zero_gradient_raises_for_normalised_rules(rule):
    theta, _ = theta_and_gradient(0)
    zero = np.zeros_like(theta)
    sam = SAM(0.05, rule)
    for method in (sam.perturbation, sam.jacobian_g, sam.d_rho):
        with pytest.raises(ZeroGradientError, match=r"undefined: the gradient is exactly zero"):
            method(theta, zero)
    with pytest.raises(ZeroGradientError, match=r"rule='usam'"):  # the message offers the remedy
        sam.jvp_g(theta, zero, theta)
    assert issubclass(ZeroGradientError, FloatingPointError)  # never a silent NaN; the CLI catches it


def test_zero_gradient_is_fine_for_usam():
    theta, _ = theta_and_gradient(0)
    sam = SAM(0.05, "usam")
    zero = np.zeros_like(theta)
    assert np.array_equal(sam.perturbation(theta, zero), zero)
    assert np.array_equal(sam.jacobian_g(theta, zero), 0.05 * np.eye(theta.shape[0]))


def test_sam_config_and_repr():
    sam = SAM(0.1, "asam", kappa=0.5)
    assert sam.config() == {"rho": 0.1, "rule": "asam", "kappa": 0.5}
    assert repr(sam) == "SAM(rho=0.1, rule='asam', kappa=0.5)"
    assert SAM(**sam.config()).config() == sam.config()
