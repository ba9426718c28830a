"""SAM fixed points (contract §3): the residual G, its hand Jacobians against autograd, the root finder,
its diagnostics (spectral radius, conditioning), and the no-fixed-point regime.

Oracles: ``residual_oracle`` transcribes contract §2/§3's step with autograd gradients of the objective
(no hand-written derivative), and the training loop itself (``train``/``sam_step``).
"""

import time

import autograd
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam.fixed_point import (
    FixedPointError,
    NoFixedPointError,
    fixed_point_diagnostics,
    no_root_reason,
    residual_jacobian,
    residual_map,
    residual_weight_jacobian,
    solve_fixed_point,
)
from refsam.tolerances import ATOL_ROOT, ATOL_SAME_POINT, RTOL_JACOBIAN, rel_err
from refsam.training import sam_step


def residual_oracle(problem, sam, theta, weights):
    """G(θ; w) from contract §2's step, with autograd gradients of F_w only (traceable in θ and w)."""
    lam = problem.weight_decay
    coupled = problem.regularization == "coupled"
    grad_F = autograd.grad(lambda t, w: problem.objective(t, None, w))
    g = grad_F(theta, weights) + (lam * theta if coupled else 0.0)
    w_hat = theta + sam.perturbation(theta, g)
    return grad_F(w_hat, weights) + (lam * w_hat if coupled else lam * theta)


@st.composite
def random_problems(draw, modes=("decoupled", "coupled")):
    """A small random problem (logistic, softmax or tiny MLP), SAM rule, and a generic θ."""
    seed = draw(st.integers(0, 10_000))
    kind = draw(st.sampled_from(["logistic", "softmax", "mlp"]))
    n = draw(st.integers(6, 20))
    rng = np.random.default_rng(seed)
    if kind == "logistic":
        model, p, K = refsam.LogisticRegression(), 3, 2
    elif kind == "softmax":
        model, p, K = refsam.SoftmaxRegression(3), 2, 3
    else:
        model, p, K = refsam.MLP((2, 3, 2)), 2, 2
    X = rng.standard_normal((n, p))
    y = rng.integers(0, K, size=n)
    weights = rng.uniform(0.5, 1.5, size=n) if draw(st.booleans()) else None
    lam = draw(st.sampled_from([0.0, 1e-3, 0.1]))
    mode = draw(st.sampled_from(modes))
    problem = refsam.Problem(model, X, y, weight_decay=lam, weights=weights, regularization=mode)
    sam = refsam.SAM(draw(st.sampled_from([0.0, 0.05, 0.3])), draw(st.sampled_from(["sam", "usam", "asam"])))
    theta = 0.7 * rng.standard_normal(problem.d)  # generic: no zero entries, non-zero gradient
    return problem, sam, theta


# -- the residual and its Jacobians -----------------------------------------------------------------
@given(random_problems())
def test_residual_map_is_one_sam_step(case):
    """θ − η G(θ) is exactly the training loop's full-batch SAM step, in both modes."""
    problem, sam, theta = case
    lr = 0.3
    theta_next, _ = sam_step(problem, sam, theta, np.arange(problem.n), lr)
    G = residual_map(problem, sam, theta)
    assert np.linalg.norm(G) > 1e-6  # a generic θ is not a root: guards against a trivially zero G
    np.testing.assert_allclose(theta - lr * G, theta_next, rtol=0, atol=1e-13)
    assert rel_err(G, residual_oracle(problem, sam, theta, problem.weights)) <= 1e-10


@given(random_problems())
def test_hand_dG_dtheta_equals_autograd_jacobian(case):
    """∂G/∂θ = (H(ŵ) + λ_in I)(I + E) + λ_out I (ASAM's T term included) = autograd Jacobian of G."""
    problem, sam, theta = case
    expected = autograd.jacobian(lambda t: residual_oracle(problem, sam, t, problem.weights))(theta)
    assert rel_err(residual_jacobian(problem, sam, theta), expected) <= RTOL_JACOBIAN


@given(random_problems())
def test_hand_dG_dw_equals_autograd_jacobian(case):
    """∂G/∂w_j = (1/n)[∇ℓ_j(ŵ) + (H(ŵ) + λ_in I)(∂ε/∂g)∇ℓ_j(θ)] = autograd Jacobian of G in w."""
    problem, sam, theta = case
    expected = autograd.jacobian(lambda w: residual_oracle(problem, sam, theta, w))(problem.weights)  # (d, n)
    assert rel_err(residual_weight_jacobian(problem, sam, theta), expected.T) <= RTOL_JACOBIAN


def test_asam_dG_dw_uses_asams_perturbation_jacobian():
    """For ASAM the inner term uses ASAM's ∂ε/∂g, not SAM's: the two rules give different ∂G/∂w."""
    X, y, _ = refsam.make_gaussian_classification(n=15, n_features=3, seed=3)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=0.1)
    theta = np.random.default_rng(0).standard_normal(problem.d)
    asam, sam = refsam.SAM(0.2, "asam"), refsam.SAM(0.2, "sam")
    expected = autograd.jacobian(lambda w: residual_oracle(problem, asam, theta, w))(problem.weights).T
    assert rel_err(residual_weight_jacobian(problem, asam, theta), expected) <= RTOL_JACOBIAN
    assert rel_err(residual_weight_jacobian(problem, sam, theta), expected) > 1e-3


# -- the contract's reference decoupled example: a stable root that training reaches --------------------
@pytest.fixture(scope="module")
def spec_example():
    """contract §3: logistic regression, Gaussian data, n=200, d=5+1, λ=1e-2, ρ=0.05, η=0.5, decoupled."""
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=1e-2)
    return problem, refsam.SAM(0.05, "sam"), 0.5


def test_spec_example_root_is_stable_and_sam_training_converges_to_it(spec_example):
    problem, sam, lr = spec_example
    root = solve_fixed_point(problem, sam, problem.init_params(0), lr=lr)
    assert root.converged and root.method in ("hybr", "newton")
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights)) <= ATOL_ROOT
    assert 0.5 < root.spectral_radius < 1.0 and root.stable
    assert 1.0 < root.condition_number < 1e3
    run = refsam.train(problem, sam, lr=lr, steps=2000, seed=0)
    assert np.max(np.abs(run.theta_final - root.theta)) <= ATOL_SAME_POINT
    # the contraction rate of training is the spectral radius: ‖θ_t − θ̂‖ shrinks like ρ(I − ηJ)^t
    distances = np.linalg.norm(run.thetas[[200, 400]] - root.theta, axis=1)
    observed_rate = (distances[1] / distances[0]) ** (1 / 200)
    assert abs(observed_rate - root.spectral_radius) <= 1e-3


def test_describe_reports_the_three_diagnostics(spec_example):
    problem, sam, lr = spec_example
    root = solve_fixed_point(problem, sam, problem.init_params(0), lr=lr)
    text = root.describe()
    assert "verified root" in text and "cond(∂G/∂θ)" in text and "stable" in text
    assert solve_fixed_point(problem, sam, root.theta).spectral_radius is None  # no lr, no radius


def test_diagnostics_flag_a_point_that_is_not_a_root(spec_example):
    problem, sam, lr = spec_example
    early = refsam.train(problem, sam, lr=lr, steps=5, seed=0).theta_final
    diag = fixed_point_diagnostics(problem, sam, early, lr=lr)
    assert not diag.converged and diag.method == "none" and diag.iterations == 0
    oracle = np.linalg.norm(residual_oracle(problem, sam, early, problem.weights))
    assert diag.residual == pytest.approx(oracle)
    assert "NOT a root" in diag.describe()


# -- MLP: roots found by the robust solver, stability diagnosed ------------------------------------------
def _mlp_problem(seed, weight_decay):
    X, y, _ = refsam.make_gaussian_classification(n=50, n_features=2, n_classes=2, separation=1.0, seed=seed)
    return refsam.Problem(refsam.MLP((2, 4, 2)), X, y, weight_decay=weight_decay)


@pytest.mark.parametrize("method", ["newton", "hybr", "lm"])
def test_every_solver_method_reaches_the_same_mlp_root(method):
    problem, sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
    start = refsam.train(problem, sam, lr=0.5, steps=150, seed=0).theta_final  # ‖G‖ ≈ 1e-3 here
    root = solve_fixed_point(problem, sam, start, lr=0.5, method=method)
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights)) <= ATOL_ROOT
    reference = refsam.train(problem, sam, lr=0.5, steps=2000, seed=0).theta_final
    assert np.max(np.abs(root.theta - reference)) <= 1e-10


def test_root_unstable_at_large_lr_is_diagnosed_training_leaves_it_and_returns_at_small_lr():
    """A root whose ∂G/∂θ has an eigenvalue above 2/η (here ≈ 5 > 4): Newton finds it, the spectral radius
    flags it, and full-batch SAM with that η is repelled from it — but converges to it with a smaller η."""
    problem, sam, lr = _mlp_problem(2, 0.03), refsam.SAM(0.05, "sam"), 0.5
    start = refsam.train(problem, sam, lr=lr, steps=1000, seed=0).theta_final
    root = solve_fixed_point(problem, sam, start, lr=lr)
    assert root.converged and root.spectral_radius > 1.2 and root.stable is False
    assert "unstable" in root.describe()
    rng = np.random.default_rng(0)
    nudge = 1e-8 * rng.standard_normal(problem.d)
    run = refsam.train(problem, sam, lr=lr, steps=200, theta0=root.theta + nudge)
    assert np.linalg.norm(run.theta_final - root.theta) > 1e3 * np.linalg.norm(nudge)
    small_lr = 0.05
    assert solve_fixed_point(problem, sam, root.theta, lr=small_lr).stable
    nudge = 1e-4 * rng.standard_normal(problem.d)
    run = refsam.train(problem, sam, lr=small_lr, steps=3000, theta0=root.theta + nudge)
    assert np.linalg.norm(run.theta_final - root.theta) < 0.5 * np.linalg.norm(nudge)


# -- failures: carried residuals, no hanging, the no-fixed-point regime ----------------------------------
def test_failure_raises_fixed_point_error_carrying_residual_and_reason():
    problem, sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
    far = 5.0 * np.random.default_rng(1).standard_normal(problem.d)
    with pytest.raises(FixedPointError, match=r"no root of G .*\(best ‖G‖ = ") as info:
        solve_fixed_point(problem, sam, far, method="newton", max_iter=2)
    err = info.value
    assert err.residual > 1e-10 and np.isfinite(err.residual)
    assert "max_iter=2" in err.reason
    assert err.residual == pytest.approx(np.linalg.norm(residual_map(problem, sam, err.theta)))
    best = solve_fixed_point(problem, sam, far, method="newton", max_iter=2, raise_on_failure=False)
    assert not best.converged and best.residual == pytest.approx(err.residual)


@pytest.mark.parametrize("rule", ["sam", "asam"])
@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_coupled_sam_on_a_convex_objective_has_no_fixed_point(rule, model):
    """contract §3: no root exists; the solver says so immediately, and training ends in a 2-cycle."""
    n_classes = 3 if model == "softmax" else 2
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, n_classes=n_classes, seed=0)
    m = refsam.LogisticRegression() if model == "logistic" else refsam.SoftmaxRegression(3)
    problem = refsam.Problem(m, X, y, weight_decay=0.1, regularization="coupled")
    sam = refsam.SAM(0.05, rule)
    start = time.perf_counter()
    with pytest.raises(NoFixedPointError, match=r"has no solution .* 2-cycle .*refsam.trajectory_influence"):
        solve_fixed_point(problem, sam, problem.init_params(0))
    assert time.perf_counter() - start < 1.0  # decided up front, no iterations
    # independent evidence: training oscillates between two points instead of converging
    thetas = refsam.train(problem, sam, lr=0.5, steps=3000, seed=0).thetas
    assert np.linalg.norm(thetas[-1] - thetas[-3]) < 1e-10
    assert np.linalg.norm(thetas[-1] - thetas[-2]) > 1e-3
    # and a brute-force root search finds nothing either (the proof is not over-cautious)
    best = scipy.optimize.least_squares(lambda t: residual_map(problem, sam, t), thetas[-1], xtol=1e-15,
                                        ftol=1e-15, gtol=1e-15, max_nfev=200)
    assert np.linalg.norm(best.fun) > 1e-4


def test_decoupled_sam_with_zero_weight_decay_on_convex_objective_has_no_fixed_point():
    """λ = 0 makes decoupled = coupled, so the same monotonicity proof applies."""
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, separation=0.5, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=0.0)
    assert no_root_reason(problem, refsam.SAM(0.05, "sam")) is not None
    assert no_root_reason(problem, refsam.SAM(0.05, "usam")) is None  # USAM: the ERM root is a root
    assert no_root_reason(problem, refsam.SAM(0.0, "sam")) is None  # ρ = 0 is gradient descent
    with pytest.raises(NoFixedPointError) as info:
        solve_fixed_point(problem, refsam.SAM(0.05, "sam"), problem.init_params(0))
    assert info.value.residual > 0


def test_coupled_mlp_search_is_bounded():
    """Non-convex coupled SAM is attempted (a root may exist) but never runs unbounded."""
    problem = _mlp_problem(2, 0.03)
    problem = refsam.Problem(problem.model, problem.X, problem.y, 0.03, regularization="coupled")
    far = 3.0 * np.random.default_rng(2).standard_normal(problem.d)
    start = time.perf_counter()
    try:
        root = solve_fixed_point(problem, refsam.SAM(0.05, "sam"), far, max_iter=20)
        assert np.linalg.norm(residual_oracle(problem, refsam.SAM(0.05, "sam"), root.theta,
                                              problem.weights)) <= ATOL_ROOT
    except FixedPointError as err:
        assert err.residual > 0
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tol": 0.0}, r"`tol` must be a finite number > 0, got 0.0"),
    ({"max_iter": 0}, r"`max_iter` must be an int >= 1, got 0"),
    ({"method": "bfgs"}, r"`method` must be one of \['auto', 'hybr', 'lm', 'newton'\], got 'bfgs'"),
    ({"lr": -1.0}, r"`lr` must be a finite number > 0, got -1.0"),
    ({"theta0": np.zeros(3)}, r"`theta0` must have shape \(6\), got \(3,\)"),
])
def test_invalid_arguments_name_argument_expected_and_got(spec_example, kwargs, message):
    problem, sam, _ = spec_example
    args = {"theta0": np.zeros(problem.d), **kwargs}
    with pytest.raises(ValueError, match=message):
        solve_fixed_point(problem, sam, **args)


@settings(max_examples=8)
@given(st.integers(0, 1000), st.sampled_from(["sam", "usam", "asam"]), st.sampled_from([0.01, 0.1, 0.3]))
def test_solver_finds_verified_roots_on_random_logistic_problems(seed, rule, rho):
    X, y, _ = refsam.make_gaussian_classification(n=30, n_features=3, seed=seed)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=0.05)
    sam = refsam.SAM(rho, rule)
    root = solve_fixed_point(problem, sam, problem.init_params(seed), lr=0.5)
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights)) <= ATOL_ROOT
    assert np.linalg.norm(root.theta) > 1e-3  # not a trivial point


# -- existence of decoupled roots: weight decay against sharpness ----------------------------------------
def _mean_hessian_along(problem, start, step, nodes=20):
    """H̄ = ∫₀¹ ∇²F(start + t·step) dt by Gauss–Legendre quadrature (autograd Hessians)."""
    t, weights = np.polynomial.legendre.leggauss(nodes)
    t, weights = 0.5 * (t + 1.0), 0.5 * weights
    hessian = autograd.hessian(lambda th: problem.objective(th))
    return sum(w * hessian(start + ti * step) for ti, w in zip(t, weights))


@pytest.mark.parametrize("model", ["logistic", "mlp"])
def test_decoupled_root_balances_weight_decay_against_sharpness(model):
    """At a decoupled SAM root, −λ θ̂ᵀu = ‖g‖ + ρ uᵀH̄u with u = ε/ρ and H̄ the mean Hessian on [θ̂, ŵ]
    (docs/closed_form.md): a root needs λ‖θ̂‖ ≥ ‖g‖ + ρ uᵀH̄u."""
    if model == "mlp":
        problem, sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
        start = refsam.train(problem, sam, lr=0.5, steps=150, seed=0).theta_final
    else:
        X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
        problem, sam = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=1e-2), refsam.SAM(0.2)
        start = problem.init_params(0)
    theta = solve_fixed_point(problem, sam, start).theta
    g = problem.grad(theta)
    u = g / np.linalg.norm(g)
    H_mean = _mean_hessian_along(problem, theta, sam.rho * u)
    lhs = -problem.weight_decay * theta @ u
    rhs = np.linalg.norm(g) + sam.rho * u @ H_mean @ u
    assert abs(lhs - rhs) <= 1e-10 * abs(rhs)
    assert sam.rho * u @ H_mean @ u > 0.1 * np.linalg.norm(g)  # the sharpness term is not negligible


def test_decoupled_roots_disappear_when_rho_outgrows_weight_decay():
    X, y, _ = refsam.make_gaussian_classification(n=50, n_features=3, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=1e-2)
    assert solve_fixed_point(problem, refsam.SAM(0.02), problem.init_params(0)).converged
    with pytest.raises(FixedPointError) as info:
        solve_fixed_point(problem, refsam.SAM(0.1), problem.init_params(0))
    assert info.value.residual > 1e-3
    thetas = refsam.train(problem, refsam.SAM(0.1), lr=0.5, steps=3000).thetas
    assert np.linalg.norm(residual_map(problem, refsam.SAM(0.1), thetas[-1])) > 1e-2
    assert np.linalg.norm(thetas[-1] - thetas[-3]) < 1e-10 < np.linalg.norm(thetas[-1] - thetas[-2])


def test_auto_finds_the_root_training_approaches_where_newton_finds_a_saddle():
    """docs/closed_form.md, "The root finder": tanh MLP, d = 183. From the same start damped Newton
    reaches a saddle root (∂G/∂θ has an eigenvalue with negative real part, spectral radius > 1) while
    "auto" returns the stable root that SAM training actually converges to."""
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, n_classes=3, seed=0)
    problem, sam, lr = refsam.Problem(refsam.MLP((5, 20, 3)), X, y, weight_decay=0.1), refsam.SAM(0.05), 0.3
    assert problem.d == 183
    start = refsam.train(problem, sam, lr=lr, steps=500).theta_final
    auto = solve_fixed_point(problem, sam, start, lr=lr)
    newton = solve_fixed_point(problem, sam, start, lr=lr, method="newton")
    assert auto.stable and not newton.stable
    assert np.min(np.linalg.eigvals(newton.jacobian).real) < 0 < np.min(np.linalg.eigvals(auto.jacobian).real)
    assert np.linalg.norm(auto.theta - newton.theta) > 0.1
    for root in (auto, newton):
        assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights)) <= ATOL_ROOT
    run = refsam.train(problem, sam, lr=lr, steps=1000, theta0=start)  # training heads for auto's root
    assert np.linalg.norm(run.theta_final - auto.theta) < 0.1 * np.linalg.norm(start - auto.theta)
