"""Matrix-free products with the closed form's system, and the iterative solvers on it.

Oracles: the dense J, ∂G/∂w (``residual_jacobian`` / ``residual_weight_jacobian``, themselves equal to
autograd Jacobians in test_closed_form) and the Hessian plus λI for the ablations; the direct LU solve.
"""

import warnings

import numpy as np
import pytest

import refsam
from refsam.errors import DivergenceError, InvalidInputError
from refsam.influence.operators import system_operators
from refsam.influence.solvers import SolverConvergenceWarning
from refsam.tolerances import RTOL_ITERATIVE_SOLVER, RTOL_JACOBIAN, rel_err


def penalised(model, X, y, weight_decay, regularization, lr=0.5):
    """(problem, optimizer): 0.1's "decoupled" λ is the SGD's weight decay, "coupled" λ the loss's l2."""
    if regularization == "coupled":
        return refsam.Problem(model, X, y, l2=weight_decay), refsam.SGD(lr)
    return refsam.Problem(model, X, y), refsam.SGD(lr, weight_decay=weight_decay)


def case(model="logistic", rule="sam", rho=0.1, regularization="decoupled", weight_decay=0.05, n=40,
         root=True):
    """(problem, sam, verified root — or with root=False a point near it —, X_test, y_test, optimizer).
    The optimizer (whose weight decay is part of G) goes to every function at θ."""
    if model == "mlp":
        X, y, _ = refsam.make_gaussian_classification(n=n, n_features=2, separation=1.5, seed=1)
        Xt, yt, _ = refsam.make_gaussian_classification(n=6, n_features=2, separation=1.5, seed=9)
        problem, opt = penalised(refsam.MLP((2, 4, 2)), X, y, weight_decay, regularization)
        start = refsam.train(problem, refsam.SAM(rho, rule), opt, 150, seed=0).theta_final
    else:
        k = 2 if model == "logistic" else 3
        X, y, _ = refsam.make_gaussian_classification(n=n, n_features=3, n_classes=k, seed=0)
        Xt, yt, _ = refsam.make_gaussian_classification(n=6, n_features=3, n_classes=k, seed=7)
        m = refsam.LogisticRegression() if model == "logistic" else refsam.SoftmaxRegression(3)
        problem, opt = penalised(m, X, y, weight_decay, regularization)
        start = problem.init_params(0)
    sam = refsam.SAM(rho, rule)
    if not root:  # the operators are those of the linearisation at any θ (coupled SAM has no root)
        return problem, sam, start + 0.1 * np.random.default_rng(5).standard_normal(problem.d), Xt, yt, opt
    return problem, sam, refsam.solve_fixed_point(problem, sam, start, optimizer=opt).theta, Xt, yt, opt


@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
@pytest.mark.parametrize("rule", ["sam", "asam", "usam"])
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_operators_equal_the_dense_jacobians(model, rule, regularization):
    problem, sam, theta, _, _, opt = case(model, rule, regularization=regularization, root=False)
    rng = np.random.default_rng(0)
    V, u = rng.standard_normal((problem.d, 3)), rng.standard_normal(problem.n)
    J = refsam.residual_jacobian(problem, sam, theta, optimizer=opt)
    G_w = refsam.residual_weight_jacobian(problem, sam, theta)
    ops = system_operators(problem, sam, theta, optimizer=opt)
    assert rel_err(ops.jacobian.matmat(V), J @ V) <= RTOL_JACOBIAN
    assert rel_err(ops.jacobian_T.matmat(V), J.T @ V) <= RTOL_JACOBIAN
    assert rel_err(ops.jacobian_T.matvec(V[:, 0]), J.T @ V[:, 0]) <= RTOL_JACOBIAN
    assert rel_err(ops.weight_jacobian.matmat(V), G_w @ V) <= RTOL_JACOBIAN
    assert rel_err(ops.weight_jacobian.rmatvec(u), G_w.T @ u) <= RTOL_JACOBIAN
    assert rel_err(ops.dense_jacobian(), J) <= RTOL_JACOBIAN
    assert ops.symmetric is False  # ρ > 0: SAM's J is not symmetric
    assert rel_err(J, J.T) > 1e-6  # ... and really is not, so the symmetric solvers must be refused


@pytest.mark.parametrize("variant", ["frozen", "erm"])
def test_ablation_operators_are_the_hessian_plus_decay(variant):
    problem, sam, theta, _, _, opt = case("softmax")
    point = theta + sam.perturbation(theta, problem.grad(theta)) if variant == "frozen" else theta
    dense = problem.hessian(point) + opt.weight_decay * np.eye(problem.d)
    G_w = problem.per_sample_grads(point) / problem.n
    ops = system_operators(problem, sam, theta, variant, optimizer=opt)
    V = np.random.default_rng(1).standard_normal((problem.d, 2))
    assert ops.symmetric
    assert rel_err(ops.jacobian_T.matmat(V), dense @ V) <= RTOL_JACOBIAN
    assert rel_err(ops.weight_jacobian.matmat(V), G_w @ V) <= RTOL_JACOBIAN
    assert ops.products == 2  # one Hessian-vector product per column


def test_products_are_counted_per_column():
    problem, sam, theta, _, _, opt = case()
    ops = system_operators(problem, sam, theta, optimizer=opt)
    ops.jacobian_T.matmat(np.ones((problem.d, 3)))
    assert ops.products == 6  # the full Jᵀv needs K(ŵ) and K(θ̂): two products per column


def test_per_coordinate_decay_operators():
    X, y, _ = refsam.make_gaussian_classification(n=30, n_features=3, seed=2)
    lam = np.array([0.02, 0.05, 0.1, 0.0])
    problem, opt = refsam.Problem(refsam.LogisticRegression(), X, y), refsam.SGD(0.5, weight_decay=lam)
    sam = refsam.SAM(0.1, "asam")
    theta = refsam.solve_fixed_point(problem, sam, problem.init_params(0), optimizer=opt).theta
    J = refsam.residual_jacobian(problem, sam, theta, optimizer=opt)
    V = np.random.default_rng(3).standard_normal((problem.d, 2))
    ops = system_operators(problem, sam, theta, optimizer=opt)
    assert rel_err(ops.jacobian_T.matmat(V), J.T @ V) <= RTOL_JACOBIAN


# -- the solvers ------------------------------------------------------------------------------------
TIGHT = {"gmres": {"rtol": 1e-13}, "bicgstab": {"rtol": 1e-13}}


@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
@pytest.mark.parametrize("solver", ["gmres", "bicgstab", "arnoldi"])
def test_iterative_solvers_reproduce_the_direct_closed_form(model, solver):
    problem, sam, theta, Xt, yt, opt = case(model)
    direct = refsam.hessian_influence(problem, sam, theta, Xt, yt, optimizer=opt)
    options = TIGHT.get(solver, {"rank": problem.d})
    result, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver=solver, return_info=True,
                                            **options, optimizer=opt)
    assert rel_err(result, direct) <= RTOL_ITERATIVE_SOLVER
    assert info.converged and info.residual <= 1e-10
    assert info.products > 0 and info.solver == solver and info.curvature == "exact"


@pytest.mark.parametrize("variant", ["frozen", "erm"])
@pytest.mark.parametrize("model", ["logistic", "mlp"])
def test_cg_on_the_symmetric_ablations(model, variant):
    problem, sam, theta, Xt, yt, opt = case(model)
    direct = refsam.hessian_influence(problem, sam, theta, Xt, yt, variant, optimizer=opt)
    result = refsam.hessian_influence(problem, sam, theta, Xt, yt, variant, solver="cg", rtol=1e-13,
                                      optimizer=opt)
    assert rel_err(result, direct) <= RTOL_ITERATIVE_SOLVER


def test_cg_is_refused_for_the_full_sam_jacobian_and_allowed_at_rho_zero():
    problem, sam, theta, Xt, yt, opt = case()
    with pytest.raises(InvalidInputError, match="not symmetric"):
        refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="cg", optimizer=opt)
    problem0, sam0, theta0, _, _, opt0 = case(rho=0.0)
    direct = refsam.hessian_influence(problem0, sam0, theta0, Xt, yt, optimizer=opt0)
    assert rel_err(refsam.hessian_influence(problem0, sam0, theta0, Xt, yt, solver="cg", rtol=1e-13,
                                            optimizer=opt0), direct) <= RTOL_ITERATIVE_SOLVER


def _jacobian_spectrum(problem, sam, theta, opt):
    return np.linalg.eigvals(refsam.residual_jacobian(problem, sam, theta, optimizer=opt))


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_lissa_converges_to_the_direct_answer_where_its_condition_holds(model):
    problem, sam, theta, Xt, yt, opt = case(model)
    mu = _jacobian_spectrum(problem, sam, theta, opt)
    assert np.all(mu.real > 0)  # convex problems: the series converges for scale > max|μ|
    scale = 1.05 * np.max(np.abs(mu))
    radius = np.max(np.abs(1.0 - mu / scale))
    depth = int(np.ceil(np.log(1e-13) / np.log(radius)))  # r^depth ≤ 1e-13
    direct = refsam.hessian_influence(problem, sam, theta, Xt, yt, optimizer=opt)
    result, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="lissa", scale=scale,
                                            depth=depth, return_info=True, optimizer=opt)
    assert info.spectral_radius == pytest.approx(radius, rel=1e-8)
    assert info.converged and info.products == 2 * depth * Xt.shape[0] + Xt.shape[0]  # + ∂G/∂w's K(ŵ)V
    assert rel_err(result, direct) <= RTOL_ITERATIVE_SOLVER
    errors = [rel_err(refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="lissa", scale=scale,
                                               depth=k, optimizer=opt), direct) for k in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2]  # shrinking with depth
    assert errors[0] > 1e-3  # (a short series is far from the answer: the test can tell)


def test_lissa_says_when_its_series_diverges():
    problem, sam, theta, Xt, yt, opt = case()
    mu_max = np.max(np.abs(_jacobian_spectrum(problem, sam, theta, opt)))
    with pytest.warns(SolverConvergenceWarning, match="diverges"):
        _, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="lissa", scale=0.45 * mu_max,
                                           depth=3, return_info=True, optimizer=opt)
    assert info.spectral_radius > 1 and not info.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverConvergenceWarning)
        with pytest.raises(DivergenceError, match="overflowed"):
            refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="lissa", scale=0.1 * mu_max,
                                     depth=100_000, optimizer=opt)


def test_lissa_damping_shifts_the_solution():
    """The fixed point is (Jᵀ + damping·scale·I)⁻¹ b: checked against that system solved directly."""
    problem, sam, theta, Xt, yt, opt = case()
    J = refsam.residual_jacobian(problem, sam, theta, optimizer=opt)
    scale, damping = 1.05 * np.max(np.abs(np.linalg.eigvals(J))), 0.01
    B = problem.model.per_sample_grads(theta, Xt, yt).T
    V = np.linalg.solve(J.T + damping * scale * np.eye(problem.d), B)
    expected = -refsam.residual_weight_jacobian(problem, sam, theta) @ V
    result = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="lissa", scale=scale,
                                      damping=damping, depth=4000, optimizer=opt)
    assert rel_err(result, expected) <= RTOL_ITERATIVE_SOLVER


def test_stochastic_lissa_products_are_unbiased():
    """Every pair of minibatches (one at ŵ, one at θ̂) enumerated: the average product is the full Jᵀv."""
    import itertools

    problem, sam, theta, _, _, opt = case(n=6)
    ops = system_operators(problem, sam, theta, optimizer=opt)
    subsets = list(itertools.combinations(range(6), 5))

    class Enumerate:  # a generator whose draws walk through all (A, B) pairs
        def __init__(self):
            self.queue = [s for pair in itertools.product(subsets, subsets) for s in pair]

        def choice(self, n, size, replace):
            return np.array(self.queue.pop(0))

    rng, v = Enumerate(), np.random.default_rng(4).standard_normal((problem.d, 1))
    mean = sum(ops.minibatch_T(rng, 5).matmat(v) for _ in range(len(subsets) ** 2)) / len(subsets) ** 2
    assert rel_err(mean, ops.jacobian_T.matmat(v)) <= 1e-12
    X, y = problem.X[:2], problem.y[:2]
    full = refsam.hessian_influence(problem, sam, theta, X, y, solver="lissa", scale=5.0, depth=50,
                                    optimizer=opt)
    same = refsam.hessian_influence(problem, sam, theta, X, y, solver="lissa", scale=5.0, depth=50,
                                    batch_size=6, optimizer=opt)  # a batch of all n rows is the full batch
    assert rel_err(same, full) <= 1e-13


def test_arnoldi_low_rank_is_an_approximation_with_its_rank_reported():
    problem, sam, theta, Xt, yt, opt = case("softmax")
    direct = refsam.hessian_influence(problem, sam, theta, Xt, yt, optimizer=opt)
    errors = []
    for rank in (2, 6, problem.d):
        result, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="arnoldi", rank=rank,
                                                return_info=True, optimizer=opt)
        errors.append(rel_err(result, direct))
        assert info.rank >= min(rank, problem.d)
    assert errors[-1] <= RTOL_ITERATIVE_SOLVER < errors[0]


def test_a_solver_that_stops_early_warns_with_its_residual():
    problem, sam, theta, Xt, yt, opt = case("mlp")
    with pytest.warns(SolverConvergenceWarning, match="relative residual"):
        _, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver="gmres", maxiter=1, restart=2,
                                           rtol=1e-14, return_info=True, optimizer=opt)
    assert not info.converged and info.residual > 1e-8


def test_direct_reports_its_cost_and_residual():
    problem, sam, theta, Xt, yt, opt = case()
    _, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, return_info=True, optimizer=opt)
    assert info.products == 2 * problem.d and info.residual <= 1e-13
    _, info = refsam.hessian_influence(problem, sam, theta, Xt, yt, "erm", return_info=True, optimizer=opt)
    assert info.products == problem.d


@pytest.mark.parametrize("options, match", [
    ({"solver": "lsqr"}, "solver"),
    ({"solver": "gmres", "depth": 3}, "takes the options"),
    ({"solver": "direct", "rtol": 1e-3}, "takes the options none"),
    ({"solver": "arnoldi"}, "needs `rank`"),
    ({"solver": "arnoldi", "rank": 10**6}, "at most d"),
    ({"solver": "lissa", "scale": 0.0}, "scale"),
    ({"solver": "gmres", "rtol": 0.0, "atol": 0.0}, "both be 0"),
    ({"solver": "gmres", "maxiter": 0}, "maxiter"),
    ({"curvature": "fisher"}, "curvature"),
])
def test_bad_solver_options_are_refused(options, match):
    problem, sam, theta, Xt, yt, opt = case()
    with pytest.raises(InvalidInputError, match=match):
        refsam.hessian_influence(problem, sam, theta, Xt, yt, **options, optimizer=opt)


# -- properties over random problems ----------------------------------------------------------------
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from refsam.kit.testing import optimizers, problems, sam_configs  # noqa: E402


@given(problem=problems(), sam=sam_configs(conventions=None), data=st.data(),
       scale=st.integers(-20, 1), variant=st.sampled_from(["full", "frozen", "erm"]),
       curvature=st.sampled_from(["exact", "gauss_newton", "kfac", "ekfac"]),
       optimizer=st.one_of(st.none(), optimizers(1, weight_decays=(0.0, 1e-2, 0.1))))
def test_matrix_free_products_equal_the_dense_system_on_random_problems(problem, sam, data, scale, variant,
                                                                        curvature, optimizer):
    """For any problem (λ in the loss), optimizer (λ as its weight decay, or none), rule, convention,
    variant and curvature, at θ of scale 2^k: the operators' J v,
    Jᵀ v, ∂G/∂w V and its transpose equal the dense system they are products with.

    k ≤ 1: beyond, the softmax of these small problems saturates, and both Hessian formulas — the
    dense one and the product — cancel O(1) terms (π_k − π_k² with π_k ≈ 1) to a result far below them,
    so the two differ by the round-off of those terms, not of the result (found with k = 3; reproduced
    by hand: entries of 1.6e-18 differing by 1.6e-18). The methods at extreme scales are the fuzz
    suite's, which compares them with autograd through the same formulas."""
    assume(sam.m_sharpness is None or sam.m_sharpness >= problem.n)  # the closed form's domain
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    theta = 2.0**scale * rng.standard_normal(problem.d)
    try:
        ops = system_operators(problem, sam, theta, variant, curvature, optimizer=optimizer)
        J = ops.dense_jacobian()
    except refsam.ZeroGradientError:
        assume(False)  # g = 0 exactly (all weights zero): SAM's ε is undefined there, and refsam says so
    V, u = rng.standard_normal((problem.d, 2)), rng.standard_normal(problem.n)
    # Round-off bound of a sum of products, c·eps·(|A||B|…)|V| elementwise, from the terms' magnitudes
    # (J itself may be small by cancellation): the same terms multiplied in another order.
    d, n = problem.d, problem.n
    lam_in = np.abs(np.broadcast_to(problem.l2, (d,)))
    lam_out = np.abs(np.broadcast_to(0.0 if optimizer is None else optimizer.weight_decay, (d,)))
    if variant == "full":
        g = ops.step.g
        P, S = np.abs(sam.jacobian_g(theta, g)), np.abs(sam.jacobian_theta(theta, g))
        K_hat = np.abs(ops.at_hat.matrix()) + np.diag(lam_in)
        K_theta = np.abs(ops.at_theta.matrix()) + np.diag(lam_in)
        J_abs = K_hat @ (np.eye(d) + P @ K_theta + S) + np.diag(lam_out)
    else:
        J_abs = np.abs(ops.at_point.matrix()) + np.diag(lam_in + lam_out)
    tol = 1e-13 * d * (J_abs @ np.abs(V)) + 1e-300
    assert np.all(np.abs(ops.jacobian.matmat(V) - J @ V) <= tol)
    assert np.all(np.abs(ops.jacobian_T.matmat(V) - J.T @ V) <= 1e-13 * d * (J_abs.T @ np.abs(V)) + 1e-300)
    if curvature == "exact" and variant == "full":
        G_w = refsam.residual_weight_jacobian(problem, sam, theta)
        G_hat = np.abs(problem.per_sample_grads(ops.step.w_hat))
        G_theta = np.abs(problem.per_sample_grads(theta))
        G_abs = (G_hat + G_theta @ (P @ K_hat)) / n  # |∂G/∂w| term by term
        assert np.all(np.abs(ops.weight_jacobian.matmat(V) - G_w @ V)
                      <= 1e-13 * d * (G_abs @ np.abs(V)) + 1e-300)
        assert np.all(np.abs(ops.weight_jacobian.rmatvec(u) - G_w.T @ u)
                      <= 1e-13 * n * (G_abs.T @ np.abs(u)) + 1e-300)
