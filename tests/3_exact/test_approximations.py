"""The scalable approximations, each checked where it must be exact and against the exact answer elsewhere.

Oracles: autograd logit Jacobians for the Gauss–Newton matrix; the exact Hessian (= Gauss–Newton for the
linear models); Kronecker factorisations where they are exact (one layer, one point); the closed-form
ablations for TRAK at full projection width; the per-step TracIn and the full adjoint for their budgeted
versions, and the one-step formula written here for the truncated adjoint.
"""

import autograd
import numpy as np
import pytest

import refsam
from refsam.errors import InvalidInputError
from refsam.influence.operators import curvature_at, system_operators
from refsam.influence.trajectory import checkpoint_segments
from refsam.tolerances import RTOL_DERIVATIVE, RTOL_EXACT_METHODS, RTOL_SAME_FORMULA, rel_err

WEIGHT_DECAY = 0.05  # 0.1's (decoupled) Problem(..., weight_decay=0.05): the optimizer's λ in 0.2


def problem_for(model, n=25, seed=0, weights=None):
    k = model.n_classes
    p = model.sizes[0] if isinstance(model, refsam.MLP) else 3
    X, y, _ = refsam.make_gaussian_classification(n=n, n_features=p, n_classes=k, separation=1.0, seed=seed)
    return refsam.Problem(model, X, y, weights)


def sgd(lr=0.5, weight_decay=WEIGHT_DECAY, **kwargs):
    return refsam.SGD(lr, weight_decay=weight_decay, **kwargs)


def autograd_gauss_newton(problem, theta):
    """Σ_i c_i J_iᵀ (∂²ℓ_i/∂z²) J_i with J_i from autograd and ∂²ℓ/∂z² written here."""
    logits = lambda t: problem.model.logits(t, problem.X)  # noqa: E731
    J = autograd.jacobian(logits)(theta)
    z = np.asarray(logits(theta))
    if z.ndim == 1:  # logistic: one logit
        J, z = J[:, None, :], z[:, None]
    G = np.zeros((problem.d, problem.d))
    for i in range(problem.n):
        if z.shape[1] == 1:
            s = 1.0 / (1.0 + np.exp(-z[i, 0]))
            out = np.array([[s * (1.0 - s)]])
        else:
            p = np.exp(z[i] - z[i].max())
            p /= p.sum()
            out = np.diag(p) - np.outer(p, p)
        G += problem.weights[i] / problem.n * J[i].T @ out @ J[i]
    return G


MODELS = [refsam.LogisticRegression(), refsam.SoftmaxRegression(3), refsam.MLP((3, 4, 3)),
          refsam.MLP((3, 3, 2, 3), activation="softplus")]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: repr(m))
def test_gauss_newton_equals_autograd(model):
    w = np.random.default_rng(0).uniform(0.0, 2.0, 25)
    problem = problem_for(model, weights=w)
    theta = problem.init_params(1) + 0.3 * np.random.default_rng(2).standard_normal(problem.d)
    G = problem.at(theta).gauss_newton()
    assert rel_err(G, autograd_gauss_newton(problem, theta)) <= RTOL_DERIVATIVE
    if not isinstance(model, refsam.MLP):  # logits linear in θ: the Gauss–Newton matrix is the Hessian
        assert rel_err(G, problem.hessian(theta)) <= RTOL_DERIVATIVE
    else:
        assert rel_err(G, problem.hessian(theta)) > 1e-3


@pytest.mark.parametrize("kind", ["gauss_newton", "kfac", "ekfac"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: repr(m))
def test_curvature_products_equal_their_matrices(model, kind):
    problem = problem_for(model)
    theta = problem.init_params(1) + 0.3 * np.random.default_rng(2).standard_normal(problem.d)
    C = curvature_at(problem, theta, kind)
    V = np.random.default_rng(3).standard_normal((problem.d, 3))
    M = C.matrix()
    assert rel_err(M, M.T) <= 1e-14
    assert np.min(np.linalg.eigvalsh(M)) >= -1e-12 * np.max(np.abs(M))  # positive semi-definite
    assert rel_err(C.times(V), M @ V) <= RTOL_DERIVATIVE
    assert C.count[0] == 3


ONE_LAYER = [refsam.SoftmaxRegression(3), refsam.MLP((3, 3)), refsam.LogisticRegression()]


@pytest.mark.parametrize("model", ONE_LAYER, ids=repr)
def test_kronecker_curvatures_are_exact_for_one_layer_and_one_point(model):
    problem = problem_for(model, n=1)
    theta = problem.init_params(1) + 0.3 * np.random.default_rng(2).standard_normal(problem.d)
    G = curvature_at(problem, theta, "gauss_newton").matrix()
    assert rel_err(G, autograd_gauss_newton(problem, theta)) <= RTOL_DERIVATIVE
    for kind in ("kfac", "ekfac"):
        assert rel_err(curvature_at(problem, theta, kind).matrix(), G) <= RTOL_DERIVATIVE


def test_kronecker_curvatures_on_a_deep_mlp():
    """One point: every diagonal block of K-FAC is exact, the off-diagonal blocks are dropped. Many points:
    EK-FAC is never further from the Gauss–Newton blocks than K-FAC (it is the best diagonal in K-FAC's
    eigenbasis, in the Frobenius norm)."""
    model = refsam.MLP((3, 4, 3))
    one = problem_for(model, n=1)
    theta = one.init_params(1)
    G = curvature_at(one, theta, "gauss_newton").matrix()
    kfac = curvature_at(one, theta, "kfac").matrix()
    for start, stop in model.layer_slices():
        assert rel_err(kfac[start:stop, start:stop], G[start:stop, start:stop]) <= RTOL_DERIVATIVE
    many = problem_for(model, n=40)
    G = curvature_at(many, theta, "gauss_newton").matrix()
    kfac, ekfac = (curvature_at(many, theta, k).matrix() for k in ("kfac", "ekfac"))
    for start, stop in model.layer_slices():
        block = slice(start, stop)
        e_kfac = np.linalg.norm(kfac[block, block] - G[block, block])
        e_ekfac = np.linalg.norm(ekfac[block, block] - G[block, block])
        assert e_ekfac <= e_kfac * (1 + 1e-12) and e_kfac > 1e-6 * np.linalg.norm(G[block, block])


def test_kfac_needs_layer_factors():
    problem, sam, theta = _user_model_case()
    with pytest.raises(InvalidInputError, match="built-in models"):
        system_operators(problem, sam, theta, curvature="kfac", optimizer=sgd())


def _user_model_case():
    class Quadratic(refsam.Model):
        name = "quadratic"

        @property
        def n_classes(self):
            return 2

        def n_params(self, n_features):
            return n_features

        def losses(self, theta, X, y):
            return (X @ theta - y) ** 2

    problem = problem_for(refsam.LogisticRegression())
    problem = refsam.Problem(Quadratic(), problem.X, problem.y)
    return problem, refsam.SAM(0.05), np.zeros(problem.d) + 0.1


@pytest.mark.parametrize("model", [refsam.LogisticRegression(), refsam.SoftmaxRegression(3)], ids=repr)
def test_gauss_newton_closed_form_is_exact_for_linear_models(model):
    problem = problem_for(model, n=40)
    sam = refsam.SAM(0.1)
    theta = refsam.solve_fixed_point(problem, sam, problem.init_params(0), optimizer=sgd(0.5))
    Xt, yt = problem.X[:5], problem.y[:5]
    exact = refsam.hessian_influence(problem, sam, theta, Xt, yt)
    for solver in ("direct", "gmres"):
        options = {"rtol": 1e-13} if solver == "gmres" else {}
        approx = refsam.hessian_influence(problem, sam, theta, Xt, yt, solver=solver,
                                          curvature="gauss_newton", **options)
        assert rel_err(approx, exact) <= RTOL_SAME_FORMULA


def test_kfac_closed_form_equals_its_dense_system():
    """K-FAC's "full" variant: J_C = K_C(ŵ)(I + P K_C(θ̂)) + λI with C = K-FAC, solved densely here."""
    model = refsam.MLP((2, 4, 2))
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=2, separation=1.5, seed=1)
    problem = refsam.Problem(model, X, y)
    sam = refsam.SAM(0.1)
    start = refsam.train(problem, sam, sgd(0.5, 0.1), steps=150, seed=0).theta_final
    fp = refsam.solve_fixed_point(problem, sam, start, optimizer=sgd(0.5, 0.1))
    theta = fp.theta
    Xt, yt = X[:4], y[:4]
    g = problem.grad(theta)
    w_hat = theta + sam.perturbation(theta, g)
    C_hat, C_theta = (curvature_at(problem, x, "kfac").matrix() for x in (w_hat, theta))
    P = sam.jacobian_g(theta, g)
    J = C_hat @ (np.eye(problem.d) + P @ C_theta) + 0.1 * np.eye(problem.d)
    G_w = (problem.per_sample_grads(w_hat) + problem.per_sample_grads(theta) @ (P @ C_hat)) / problem.n
    expected = -G_w @ np.linalg.solve(J.T, problem.model.per_sample_grads(theta, Xt, yt).T)
    for solver, options in (("direct", {}), ("gmres", {"rtol": 1e-13})):
        result = refsam.hessian_influence(problem, sam, fp, Xt, yt, solver=solver, curvature="kfac",
                                          **options)
        assert rel_err(result, expected) <= 1e-8
    assert rel_err(result, refsam.hessian_influence(problem, sam, fp, Xt, yt)) > 1e-3


# -- TRAK ------------------------------------------------------------------------------------------
def _root(model=None):
    problem = problem_for(model or refsam.SoftmaxRegression(3), n=40)
    sam = refsam.SAM(0.1)
    return problem, sam, refsam.solve_fixed_point(problem, sam, problem.init_params(0), optimizer=sgd(0.5))


def test_trak_at_full_width_is_koh_liang():
    problem, sam, fp = _root()
    theta, opt = fp.theta, fp.optimizer
    Xt, yt = problem.X[:4], problem.y[:4]
    erm = refsam.hessian_influence(problem, sam, fp, Xt, yt, "erm")
    assert rel_err(refsam.trak_influence(problem, fp, Xt, yt, problem.d, curvature="exact"), erm) \
        <= RTOL_SAME_FORMULA
    w_hat = theta + sam.perturbation(theta, problem.grad(theta))  # every gradient at ŵ, the test's too
    K_hat = problem.hessian(w_hat) + WEIGHT_DECAY * np.eye(problem.d)
    at_w_hat = -problem.per_sample_grads(w_hat) @ np.linalg.solve(
        K_hat, problem.model.per_sample_grads(w_hat, Xt, yt).T) / problem.n
    assert rel_err(refsam.trak_influence(problem, w_hat, Xt, yt, problem.d, curvature="exact", optimizer=opt),
                   at_w_hat) <= RTOL_SAME_FORMULA
    G = problem.per_sample_grads(theta)  # the empirical Fisher, written here
    F = G.T @ G / problem.n + WEIGHT_DECAY * np.eye(problem.d)
    fisher = -G @ np.linalg.solve(F, problem.model.per_sample_grads(theta, Xt, yt).T) / problem.n
    assert rel_err(refsam.trak_influence(problem, theta, Xt, yt, problem.d, optimizer=opt), fisher) \
        <= RTOL_SAME_FORMULA
    narrow = refsam.trak_influence(problem, fp, Xt, yt, 3, curvature="exact")
    assert rel_err(narrow, erm) > 1e-3  # a narrow projection is an approximation


@pytest.mark.parametrize("kwargs, match", [
    ({"dimension": 0}, "dimension"), ({"dimension": 10**6}, "at most d"),
    ({"dimension": 3, "curvature": "kfac"}, "curvature"), ({"dimension": 3, "damping": -1.0}, "damping"),
])
def test_trak_bad_input(kwargs, match):
    problem, _, fp = _root()
    with pytest.raises(InvalidInputError, match=match):
        refsam.trak_influence(problem, fp, problem.X[:2], problem.y[:2], **kwargs)


# -- budgeted trajectory methods ------------------------------------------------------------------------
def _run(batch_size=None, momentum=0.0, steps=12):
    problem = problem_for(refsam.LogisticRegression(), n=20)
    traj = refsam.train(problem, refsam.SAM(0.1), sgd(0.3, momentum=momentum), steps, batch_size=batch_size,
                        seed=0)
    return problem, traj, problem.X[:3], problem.y[:3]


@pytest.mark.parametrize("batch_size, momentum", [(None, 0.0), (7, 0.0), (7, 0.9)])
def test_truncated_adjoint(batch_size, momentum):
    problem, traj, Xt, yt = _run(batch_size, momentum)
    exact = refsam.trajectory_influence(problem, traj, Xt, yt)
    full = refsam.trajectory_influence(problem, traj, Xt, yt, last_steps=traj.steps)
    assert rel_err(full, exact) == 0.0
    errors = [rel_err(refsam.trajectory_influence(problem, traj, Xt, yt, last_steps=k), exact)
              for k in (1, 4, 8)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_truncated_adjoint_of_one_step_is_the_last_steps_weight_term():
    """K = 1: I_j = ∇f(θ_T)ᵀ b_{T−1,j}, b = −η c_j [∇ℓ_j(ŵ) + H(ŵ) P ∇ℓ_j(θ)] (decoupled, full batch)."""
    problem, traj, Xt, yt = _run()
    sam, t = traj.sam(), traj.steps - 1
    theta, eta = traj.thetas[t], traj.lrs[t]
    g = problem.grad(theta)
    w_hat = theta + sam.perturbation(theta, g)
    inner = sam.jacobian_g(theta, g) @ problem.hessian(w_hat)  # (H(ŵ) P)ᵀ
    b = -eta / problem.n * (problem.per_sample_grads(w_hat) + problem.per_sample_grads(theta) @ inner)
    expected = b @ problem.model.per_sample_grads(traj.theta_final, Xt, yt).T
    assert rel_err(refsam.trajectory_influence(problem, traj, Xt, yt, last_steps=1), expected) \
        <= RTOL_EXACT_METHODS


@pytest.mark.parametrize("method", ["tracin", "tracin_unperturbed"])
@pytest.mark.parametrize("batch_size, momentum", [(None, 0.0), (7, 0.9)])
def test_tracin_checkpoints(method, batch_size, momentum):
    problem, traj, Xt, yt = _run(batch_size, momentum)
    per_step = refsam.trajectory_influence(problem, traj, Xt, yt, method)
    every = refsam.trajectory_influence(problem, traj, Xt, yt, method, checkpoints=traj.steps)
    assert rel_err(every, per_step) <= 1e-13
    one = refsam.trajectory_influence(problem, traj, Xt, yt, method, checkpoints=1)
    x = traj.thetas[0] + (traj.epsilons[0] if method == "tracin" else 0.0)
    gamma = refsam.influence.trajectory.step_weights(traj)
    coefficient = np.zeros(problem.n)
    for t in range(traj.steps):
        np.add.at(coefficient, traj.batches[t], gamma[t] / len(traj.batches[t]))
    products = problem.per_sample_grads(x) @ problem.model.per_sample_grads(x, Xt, yt).T
    expected = -coefficient[:, None] * products
    assert rel_err(one, expected) <= 1e-13
    assert rel_err(one, per_step) > 1e-3


def test_checkpoint_segments_cover_the_run():
    for steps, k in [(10, 3), (7, 7), (100, 1), (5, 4)]:
        segments = checkpoint_segments(steps, k)
        assert len(segments) == k and [t for s in segments for t in s] == list(range(steps))
        assert max(map(len, segments)) - min(map(len, segments)) <= 1


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "tracin", "last_steps": 2}, "method='adjoint'"),
    ({"last_steps": 0}, "last_steps"),
    ({"method": "adjoint", "checkpoints": 2}, "TracIn"),
    ({"method": "tracin", "checkpoints": 100}, "at most"),
])
def test_budget_keywords_bad_input(kwargs, match):
    problem, traj, Xt, yt = _run()
    with pytest.raises(InvalidInputError, match=match):
        refsam.trajectory_influence(problem, traj, Xt, yt, **kwargs)
