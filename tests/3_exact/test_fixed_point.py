"""SAM fixed points (contract §3): the residual G, its hand Jacobians against autograd, the root finder,
its diagnostics (spectral radius, conditioning), and the no-fixed-point regime.

Oracles: ``residual_oracle`` transcribes contract §2/§3's step with autograd gradients of the objective
(no hand-written derivative), and the training loop itself (``train``; one step is
``optimizer.update`` of ``sam_gradient``'s descent gradient).

0.1's regularisation modes in 0.2: "decoupled" λ is the base optimizer's weight decay (``SGD(lr,
weight_decay=λ)``: G = g̃ + λθ), "coupled" λ is the loss's L2 term (``Problem(..., l2=λ)``) with an SGD
without weight decay. Every function at a root takes that optimizer.
"""

import time

import autograd
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam.influence.fixed_point import (
    FixedPointError,
    NoFixedPointError,
    fixed_point_diagnostics,
    no_root_reason,
    solve_fixed_point,
)
from refsam.influence.linearisation import residual_jacobian, residual_map, residual_weight_jacobian
from refsam.tolerances import ATOL_ROOT, ATOL_SAME_POINT, RTOL_JACOBIAN, rel_err
from refsam.training import sam_gradient


def residual_oracle(problem, sam, theta, weights, optimizer=None):
    """G(θ; w) from contract §2's step, with autograd gradients of F_w only (traceable in θ and w):
    the loss's L2 λ_in (``problem.l2``) is seen by the perturbation and the descent gradient, the
    optimizer's weight decay λ_out is added at the unperturbed point."""
    lam_in = problem.l2
    lam_out = 0.0 if optimizer is None else optimizer.weight_decay
    grad_F = autograd.grad(lambda t, w: problem.objective(t, None, w))
    g = grad_F(theta, weights) + lam_in * theta
    w_hat = theta + sam.perturbation(theta, g)
    return grad_F(w_hat, weights) + lam_in * w_hat + lam_out * theta


def penalised(model, X, y, lam, mode, lr=0.5, weights=None):
    """(problem, optimizer) with λ where 0.1's `regularization` mode put it (module docstring); "both"
    (new in 0.2) puts λ in the loss and in the optimizer."""
    l2 = lam if mode in ("coupled", "both") else 0.0
    weight_decay = lam if mode in ("decoupled", "both") else 0.0
    return refsam.Problem(model, X, y, weights, l2=l2), refsam.SGD(lr, weight_decay=weight_decay)


@st.composite
def random_problems(draw, modes=("decoupled", "coupled", "both")):
    """A small random problem (logistic, softmax or tiny MLP), SAM rule, a generic θ and the optimizer."""
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
    problem, optimizer = penalised(model, X, y, lam, mode, lr=0.3, weights=weights)
    sam = refsam.SAM(draw(st.sampled_from([0.0, 0.05, 0.3])), draw(st.sampled_from(["sam", "usam", "asam"])))
    theta = 0.7 * rng.standard_normal(problem.d)  # generic: no zero entries, non-zero gradient
    return problem, sam, theta, optimizer


# -- the residual and its Jacobians -----------------------------------------------------------------
@given(random_problems())
def test_residual_map_is_one_sam_step(case):
    """θ − η G(θ) is exactly the training loop's full-batch SAM step, in every mode."""
    problem, sam, theta, optimizer = case
    lr = optimizer.lr
    descent = sam_gradient(problem, sam, theta, np.arange(problem.n), None).descent
    theta_next, _ = optimizer.update(0, lr, theta, optimizer.init_state(theta), descent)
    G = residual_map(problem, sam, theta, optimizer=optimizer)
    assert np.linalg.norm(G) > 1e-6  # a generic θ is not a root: guards against a trivially zero G
    np.testing.assert_allclose(theta - lr * G, theta_next, rtol=0, atol=1e-13)
    assert rel_err(G, residual_oracle(problem, sam, theta, problem.weights, optimizer)) <= 1e-10


@given(random_problems())
def test_hand_dG_dtheta_equals_autograd_jacobian(case):
    """∂G/∂θ = (H(ŵ) + λ_in I)(I + E) + λ_out I (ASAM's T term included) = autograd Jacobian of G."""
    problem, sam, theta, optimizer = case
    oracle = autograd.jacobian(lambda t: residual_oracle(problem, sam, t, problem.weights, optimizer))
    expected = oracle(theta)
    assert rel_err(residual_jacobian(problem, sam, theta, optimizer=optimizer), expected) <= RTOL_JACOBIAN


@given(random_problems())
def test_hand_dG_dw_equals_autograd_jacobian(case):
    """∂G/∂w_j = (1/n)[∇ℓ_j(ŵ) + (H(ŵ) + λ_in I)(∂ε/∂g)∇ℓ_j(θ)] = autograd Jacobian of G in w."""
    problem, sam, theta, optimizer = case  # the optimizer's λθ does not depend on w
    oracle = autograd.jacobian(lambda w: residual_oracle(problem, sam, theta, w, optimizer))
    expected = oracle(problem.weights)  # (d, n)
    assert rel_err(residual_weight_jacobian(problem, sam, theta), expected.T) <= RTOL_JACOBIAN


def test_asam_dG_dw_uses_asams_perturbation_jacobian():
    """For ASAM the inner term uses ASAM's ∂ε/∂g, not SAM's: the two rules give different ∂G/∂w."""
    X, y, _ = refsam.make_gaussian_classification(n=15, n_features=3, seed=3)
    problem, optimizer = penalised(refsam.LogisticRegression(), X, y, 0.1, "decoupled")
    theta = np.random.default_rng(0).standard_normal(problem.d)
    asam, sam = refsam.SAM(0.2, "asam"), refsam.SAM(0.2, "sam")
    oracle = autograd.jacobian(lambda w: residual_oracle(problem, asam, theta, w, optimizer))
    expected = oracle(problem.weights).T
    assert rel_err(residual_weight_jacobian(problem, asam, theta), expected) <= RTOL_JACOBIAN
    assert rel_err(residual_weight_jacobian(problem, sam, theta), expected) > 1e-3


# -- the contract's reference decoupled example: a stable root that training reaches --------------------
@pytest.fixture(scope="module")
def spec_example():
    """contract §3: logistic regression, Gaussian data, n=200, d=5+1, λ=1e-2, ρ=0.05, η=0.5, decoupled."""
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
    problem, optimizer = penalised(refsam.LogisticRegression(), X, y, 1e-2, "decoupled", lr=0.5)
    return problem, refsam.SAM(0.05, "sam"), optimizer


def test_spec_example_root_is_stable_and_sam_training_converges_to_it(spec_example):
    problem, sam, opt = spec_example
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=opt)
    assert root.converged and root.method in ("ptc", "hybr", "newton")
    assert root.optimizer is opt and root.lr == 0.5
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights, opt)) <= ATOL_ROOT
    assert 0.5 < root.spectral_radius < 1.0 and root.stable
    assert 1.0 < root.condition_number < 1e3
    run = refsam.train(problem, sam, opt, 2000, seed=0)
    assert np.max(np.abs(run.theta_final - root.theta)) <= ATOL_SAME_POINT
    # the contraction rate of training is the spectral radius: ‖θ_t − θ̂‖ shrinks like ρ(I − ηJ)^t
    distances = np.linalg.norm(run.thetas[[200, 400]] - root.theta, axis=1)
    observed_rate = (distances[1] / distances[0]) ** (1 / 200)
    assert abs(observed_rate - root.spectral_radius) <= 1e-3


def test_describe_reports_the_three_diagnostics(spec_example):
    problem, sam, opt = spec_example
    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=opt)
    text = root.describe()
    assert "verified root" in text and "cond(∂G/∂θ)" in text and "stable" in text
    bare = fixed_point_diagnostics(problem, sam, root.theta)  # no optimizer: no η, no radius
    assert bare.spectral_radius is None and bare.lr is None and bare.stable is None
    assert "spectral radius" not in bare.describe()


def test_diagnostics_flag_a_point_that_is_not_a_root(spec_example):
    problem, sam, opt = spec_example
    early = refsam.train(problem, sam, opt, 5, seed=0).theta_final
    diag = fixed_point_diagnostics(problem, sam, early, optimizer=opt)
    assert not diag.converged and diag.method == "none" and diag.iterations == 0
    oracle = np.linalg.norm(residual_oracle(problem, sam, early, problem.weights, opt))
    assert diag.residual == pytest.approx(oracle)
    assert "NOT a root" in diag.describe()


# -- MLP: roots found by the robust solver, stability diagnosed ------------------------------------------
def _mlp_problem(seed, weight_decay, mode="decoupled", lr=0.5):
    X, y, _ = refsam.make_gaussian_classification(n=50, n_features=2, n_classes=2, separation=1.0, seed=seed)
    return penalised(refsam.MLP((2, 4, 2)), X, y, weight_decay, mode, lr=lr)


@pytest.mark.parametrize("method", ["ptc", "newton", "hybr", "lm"])
def test_every_solver_method_reaches_the_same_mlp_root(method):
    (problem, opt), sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
    start = refsam.train(problem, sam, opt, 150, seed=0).theta_final  # ‖G‖ ≈ 1e-3 here
    root = solve_fixed_point(problem, sam, start, optimizer=opt, method=method)
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights, opt)) <= ATOL_ROOT
    reference = refsam.train(problem, sam, opt, 2000, seed=0).theta_final
    assert np.max(np.abs(root.theta - reference)) <= 1e-10


def test_root_unstable_at_large_lr_is_diagnosed_training_leaves_it_and_returns_at_small_lr():
    """A root whose ∂G/∂θ has an eigenvalue above 2/η (here ≈ 5 > 4): Newton finds it, the spectral radius
    flags it, and full-batch SAM with that η is repelled from it — but converges to it with a smaller η."""
    (problem, opt), sam = _mlp_problem(2, 0.03, lr=0.5), refsam.SAM(0.05, "sam")
    start = refsam.train(problem, sam, opt, 1000, seed=0).theta_final
    root = solve_fixed_point(problem, sam, start, optimizer=opt)
    assert root.converged and root.spectral_radius > 1.2 and root.stable is False
    assert "unstable" in root.describe()
    rng = np.random.default_rng(0)
    nudge = 1e-8 * rng.standard_normal(problem.d)
    run = refsam.train(problem, sam, opt, 200, theta0=root.theta + nudge)
    assert np.linalg.norm(run.theta_final - root.theta) > 1e3 * np.linalg.norm(nudge)
    small = opt.replace(lr=0.05)
    assert small.weight_decay == opt.weight_decay
    assert solve_fixed_point(problem, sam, root.theta, optimizer=small).stable
    nudge = 1e-4 * rng.standard_normal(problem.d)
    run = refsam.train(problem, sam, small, 3000, theta0=root.theta + nudge)
    assert np.linalg.norm(run.theta_final - root.theta) < 0.5 * np.linalg.norm(nudge)


# -- failures: carried residuals, no hanging, the no-fixed-point regime ----------------------------------
def test_failure_raises_fixed_point_error_carrying_residual_and_reason():
    (problem, opt), sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
    far = 5.0 * np.random.default_rng(1).standard_normal(problem.d)
    with pytest.raises(FixedPointError, match=r"no root of G .*\(best ‖G‖ = ") as info:
        solve_fixed_point(problem, sam, far, optimizer=opt, method="newton", max_iter=2)
    err = info.value
    assert err.residual > 1e-10 and np.isfinite(err.residual)
    assert "max_iter=2" in err.reason
    assert err.residual == pytest.approx(np.linalg.norm(residual_map(problem, sam, err.theta, optimizer=opt)))
    best = solve_fixed_point(problem, sam, far, optimizer=opt, method="newton", max_iter=2,
                             raise_on_failure=False)
    assert not best.converged and best.residual == pytest.approx(err.residual)


@pytest.mark.parametrize("rule", ["sam", "asam"])
@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_coupled_sam_on_a_convex_objective_has_no_fixed_point(rule, model):
    """contract §3: no root exists; the solver says so immediately, and training ends in a 2-cycle."""
    n_classes = 3 if model == "softmax" else 2
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, n_classes=n_classes, seed=0)
    m = refsam.LogisticRegression() if model == "logistic" else refsam.SoftmaxRegression(3)
    problem, opt = penalised(m, X, y, 0.1, "coupled", lr=0.5)  # the loss's L2, an SGD without weight decay
    sam = refsam.SAM(0.05, rule)
    start = time.perf_counter()
    for optimizer in (opt, None):  # the proof applies with no optimizer weight decay, or no optimizer
        with pytest.raises(NoFixedPointError,
                           match=r"has no solution .* 2-cycle .*refsam.trajectory_influence"):
            solve_fixed_point(problem, sam, problem.init_params(0), optimizer=optimizer)
    assert time.perf_counter() - start < 1.0  # decided up front, no iterations
    # independent evidence: training oscillates between two points instead of converging
    thetas = refsam.train(problem, sam, opt, 3000, seed=0).thetas
    assert np.linalg.norm(thetas[-1] - thetas[-3]) < 1e-10
    assert np.linalg.norm(thetas[-1] - thetas[-2]) > 1e-3
    # and a brute-force root search finds nothing either (the proof is not over-cautious)
    best = scipy.optimize.least_squares(lambda t: residual_map(problem, sam, t, optimizer=opt), thetas[-1],
                                        xtol=1e-15,
                                        ftol=1e-15, gtol=1e-15, max_nfev=200)
    assert np.linalg.norm(best.fun) > 1e-4


def test_decoupled_sam_with_zero_weight_decay_on_convex_objective_has_no_fixed_point():
    """λ = 0 makes decoupled = coupled, so the same monotonicity proof applies (0.2: the optimizer has no
    weight decay, whatever the loss's l2; any λ > 0 in the optimizer lifts it)."""
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, separation=0.5, seed=0)
    problem, opt = penalised(refsam.LogisticRegression(), X, y, 0.0, "decoupled")
    assert opt.weight_decay == 0.0 and problem.l2 == 0.0
    for optimizer in (opt, None):
        assert no_root_reason(problem, refsam.SAM(0.05, "sam"), optimizer) is not None
        assert no_root_reason(problem, refsam.SAM(0.05, "usam"), optimizer) is None  # USAM: the ERM root
        assert no_root_reason(problem, refsam.SAM(0.0, "sam"), optimizer) is None  # ρ = 0 is gradient descent
    assert no_root_reason(problem, refsam.SAM(0.05, "sam"), opt.replace(weight_decay=1e-2)) is None
    with pytest.raises(NoFixedPointError) as info:
        solve_fixed_point(problem, refsam.SAM(0.05, "sam"), problem.init_params(0), optimizer=opt)
    assert info.value.residual > 0


class _UserLogistic(refsam.Model):
    """The logistic loss written by a user, log(1 + e^m), m = (1 − 2y) z; convexity left at the default."""

    name = "user_logistic"
    n_classes = 2

    def n_params(self, n_features):
        return n_features + 1

    def losses(self, theta, X, y):
        z = autograd.numpy.dot(X, theta[:-1]) + theta[-1]
        return autograd.numpy.logaddexp(0.0, (1.0 - 2.0 * y) * z)


class _ConvexUserLogistic(_UserLogistic):
    name = "convex_user_logistic"
    convex = True  # the user says every per-sample loss is convex in θ


def test_the_no_root_proof_follows_the_models_convexity_property_not_its_class():
    """The proof needs convex losses: a property of the model (``model.convex``), which a user model may
    declare; the built-in linear models declare it, the MLP and a user model by default do not."""
    assert refsam.LogisticRegression().convex and refsam.SoftmaxRegression(3).convex
    assert not refsam.MLP((3, 4, 2)).convex and not _UserLogistic().convex and _ConvexUserLogistic().convex
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, separation=0.5, seed=0)
    sam = refsam.SAM(0.05, "sam")
    convex = refsam.Problem(_ConvexUserLogistic(), X, y, l2=0.1)
    default = refsam.Problem(_UserLogistic(), X, y, l2=0.1)
    builtin = refsam.Problem(refsam.LogisticRegression(), X, y, l2=0.1)
    for optimizer in (None, refsam.SGD(0.5)):
        reason = no_root_reason(convex, sam, optimizer)
        assert reason is not None and "has no solution" in reason and "convex_user_logistic" in reason
        assert no_root_reason(builtin, sam, optimizer) is not None  # the built-in twin: the same proof
        assert no_root_reason(default, sam, optimizer) is None
    assert no_root_reason(convex, sam, refsam.SGD(0.5, weight_decay=0.1)) is None  # weight decay: no proof
    with pytest.raises(NoFixedPointError, match="has no solution"):
        solve_fixed_point(convex, sam, convex.init_params(0), optimizer=refsam.SGD(0.5))
    # the default model is attempted (a root may exist as far as refsam knows): no proof, a bounded search
    try:
        solve_fixed_point(default, sam, default.init_params(0), optimizer=refsam.SGD(0.5), max_iter=5)
    except NoFixedPointError:  # pragma: no cover - the failure this test guards against
        pytest.fail("a model that does not declare convexity got the convex no-root proof")
    except FixedPointError as err:
        assert "no root of G" in str(err)


def test_coupled_mlp_search_is_bounded():
    """Non-convex coupled SAM is attempted (a root may exist) but never runs unbounded."""
    problem, _ = _mlp_problem(2, 0.03, "coupled")  # the loss's L2; solved without an optimizer (no lr)
    assert problem.l2 == 0.03
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
    ({"method": "bfgs"}, r"`method` must be one of \['auto', 'hybr', 'lm', 'newton', 'ptc'\], got 'bfgs'"),
    ({"optimizer": 0.5}, r"`optimizer` must be a refsam optimizer such as refsam.SGD\(lr, ...\), got float"),
    ({"optimizer": refsam.SGD(0.5, weight_decay=np.ones(3))},
     r"per-coordinate `weight_decay` must have shape \(6,\) like θ, got \(3,\)"),
    ({"theta0": np.zeros(3)}, r"`theta0` must have shape \(6\), got \(3,\)"),
])
def test_invalid_arguments_name_argument_expected_and_got(spec_example, kwargs, message):
    problem, sam, opt = spec_example
    args = {"theta0": np.zeros(problem.d), "optimizer": opt, **kwargs}
    with pytest.raises(ValueError, match=message):
        solve_fixed_point(problem, sam, **args)


def test_the_0_1_lr_keyword_is_gone(spec_example):
    """η comes from the optimizer now (its weight decay is part of G): `lr=` is refused, not ignored."""
    problem, sam, _ = spec_example
    with pytest.raises(TypeError, match="lr"):
        solve_fixed_point(problem, sam, np.zeros(problem.d), lr=0.5)


@settings(max_examples=8)
@given(st.integers(0, 1000), st.sampled_from(["sam", "usam", "asam"]), st.sampled_from([0.01, 0.1, 0.3]))
def test_solver_finds_verified_roots_on_random_logistic_problems(seed, rule, rho):
    X, y, _ = refsam.make_gaussian_classification(n=30, n_features=3, seed=seed)
    problem, opt = penalised(refsam.LogisticRegression(), X, y, 0.05, "decoupled", lr=0.5)
    sam = refsam.SAM(rho, rule)
    root = solve_fixed_point(problem, sam, problem.init_params(seed), optimizer=opt)
    assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights, opt)) <= ATOL_ROOT
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
        (problem, opt), sam = _mlp_problem(1, 0.1), refsam.SAM(0.05, "sam")
        start = refsam.train(problem, sam, opt, 150, seed=0).theta_final
    else:
        X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
        problem, opt = penalised(refsam.LogisticRegression(), X, y, 1e-2, "decoupled")
        sam, start = refsam.SAM(0.2), problem.init_params(0)
    theta = solve_fixed_point(problem, sam, start, optimizer=opt).theta
    g = problem.grad(theta)
    u = g / np.linalg.norm(g)
    H_mean = _mean_hessian_along(problem, theta, sam.rho * u)
    lhs = -opt.weight_decay * theta @ u
    rhs = np.linalg.norm(g) + sam.rho * u @ H_mean @ u
    assert abs(lhs - rhs) <= 1e-10 * abs(rhs)
    assert sam.rho * u @ H_mean @ u > 0.1 * np.linalg.norm(g)  # the sharpness term is not negligible


def test_decoupled_roots_disappear_when_rho_outgrows_weight_decay():
    X, y, _ = refsam.make_gaussian_classification(n=50, n_features=3, seed=0)
    problem, opt = penalised(refsam.LogisticRegression(), X, y, 1e-2, "decoupled", lr=0.5)
    assert solve_fixed_point(problem, refsam.SAM(0.02), problem.init_params(0), optimizer=opt).converged
    with pytest.raises(FixedPointError) as info:
        solve_fixed_point(problem, refsam.SAM(0.1), problem.init_params(0), optimizer=opt)
    assert info.value.residual > 1e-3
    thetas = refsam.train(problem, refsam.SAM(0.1), opt, 3000).thetas
    assert np.linalg.norm(residual_map(problem, refsam.SAM(0.1), thetas[-1], optimizer=opt)) > 1e-2
    assert np.linalg.norm(thetas[-1] - thetas[-3]) < 1e-10 < np.linalg.norm(thetas[-1] - thetas[-2])


def test_auto_finds_the_root_training_approaches_where_newton_finds_a_saddle():
    """docs/closed_form.md, "The root finder": tanh MLP, d = 183. From the same start damped Newton
    reaches a saddle root (∂G/∂θ has an eigenvalue with negative real part, spectral radius > 1) while
    "auto" returns the stable root that SAM training actually converges to."""
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, n_classes=3, seed=0)
    (problem, opt), sam = penalised(refsam.MLP((5, 20, 3)), X, y, 0.1, "decoupled", lr=0.3), refsam.SAM(0.05)
    assert problem.d == 183
    start = refsam.train(problem, sam, opt, 500).theta_final
    auto = solve_fixed_point(problem, sam, start, optimizer=opt)
    newton = solve_fixed_point(problem, sam, start, optimizer=opt, method="newton")
    assert auto.stable and not newton.stable
    assert np.min(np.linalg.eigvals(newton.jacobian).real) < 0 < np.min(np.linalg.eigvals(auto.jacobian).real)
    assert np.linalg.norm(auto.theta - newton.theta) > 0.1
    for root in (auto, newton):
        assert np.linalg.norm(residual_oracle(problem, sam, root.theta, problem.weights, opt)) <= ATOL_ROOT
    run = refsam.train(problem, sam, opt, 1000, theta0=start)  # training heads for auto's root
    assert np.linalg.norm(run.theta_final - auto.theta) < 0.1 * np.linalg.norm(start - auto.theta)
