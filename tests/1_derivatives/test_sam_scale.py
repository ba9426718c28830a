"""Scale-safe SAM rules: ε(θ; g) is invariant to the scale of g, and refsam computes it — and its
Jacobians — at gradients whose squared norm would overflow (‖g‖ ~ 1e200) or underflow (‖g‖ ~ 1e-200)
float64, instead of returning ε = 0 (0.1: sqrt(g·g) = inf) or calling a non-zero gradient zero."""

import numpy as np
import pytest

import refsam
from refsam import SAM
from refsam.tolerances import RTOL_EXACT_METHODS, rel_err

SCALES = [1e200, 1e-170, 1e-200, 1e-300]


def _theta_g(seed=0, d=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), rng.standard_normal(d)


@pytest.mark.parametrize("rule", ["sam", "asam"])
@pytest.mark.parametrize("scale", SCALES)
def test_the_perturbation_and_its_jacobians_are_scale_safe(rule, scale):
    sam = SAM(0.1, rule, kappa=0.05)
    theta, g = _theta_g()
    eps, P, S = sam.perturbation(theta, g), sam.jacobian_g(theta, g), sam.jacobian_theta(theta, g)
    big = scale * g
    assert rel_err(sam.perturbation(theta, big), eps) <= 1e-14  # ε(θ; c g) = ε(θ; g)
    assert rel_err(sam.jacobian_g(theta, big) * scale, P) <= 1e-13  # ∂ε/∂g scales as 1/c
    assert rel_err(sam.jacobian_theta(theta, big), S) <= 1e-13 or not np.any(S)  # ∂ε/∂θ|_g does not
    v = np.ones((6, 2))
    for product in (sam.jvp_g(theta, big, v) * scale, sam.jvp_theta(theta, big, v),
                    sam.vjp_theta(theta, big, v)):
        assert np.all(np.isfinite(product))


def test_a_run_with_tiny_sample_weights_keeps_its_exact_influence():
    """Weights ~1e-110 make every gradient ~1e-110 (0.1: NaN from ASAM's ‖s‖³ in the adjoint)."""
    X, y, _ = refsam.make_gaussian_classification(n=12, n_features=3, seed=3)
    problem = refsam.Problem(refsam.LogisticRegression(), X[:10], y[:10], weights=np.full(10, 1e-110))
    run = refsam.train(problem, SAM(0.1, "asam"), refsam.SGD(1e100), 5, batch_size=4)
    exact = refsam.trajectory_influence(problem, run, X[10:], y[10:])
    autodiff = refsam.trajectory_influence(problem, run, X[10:], y[10:], method="autodiff")
    assert np.all(np.isfinite(exact)) and np.max(np.abs(autodiff)) > 0
    assert rel_err(exact, autodiff) <= RTOL_EXACT_METHODS
    assert rel_err(refsam.trajectory_influence(problem, run, X[10:], y[10:], method="forward"),
                   autodiff) <= RTOL_EXACT_METHODS
