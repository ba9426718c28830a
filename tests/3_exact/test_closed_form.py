"""Closed-form influence at SAM fixed points (contract §3, §5.4–5.5).

Oracle ladder: central finite differences of the re-solved root (w_j = 1 ± h); leave-one-out re-solves;
Koh–Liang written independently here with autograd Hessians; autograd through the SAM training loop
(whose derivative must converge to the closed form when training converges to a stable root).
"""

import warnings

import autograd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr, spearmanr

import refsam
from refsam.ground_truth.resolve import (
    finite_difference_influence,
    finite_difference_parameters,
    leave_one_out,
)
from refsam.influence.closed_form import (
    UnverifiedRootError,
    UnverifiedRootWarning,
    hessian_influence,
    hyperparameter_sensitivity,
    parameter_influence,
    self_influence,
)
from refsam.influence.fixed_point import solve_fixed_point
from refsam.influence.linearisation import residual_map
from refsam.tolerances import RTOL_CLOSED_FORM_FD, RTOL_KOH_LIANG, RTOL_SAME_FORMULA, rel_err

MIN_DRIFT = 1e-3  # the SAM terms must change the answer here, or the FD test could not tell variants apart


# 0.1's regularisation modes, in 0.2: "decoupled" λ is the base optimizer's weight decay
# (SGD(lr, weight_decay=λ)), "coupled" λ is the loss's L2 term (Problem(..., l2=λ)) with a plain SGD.
MODES = ("decoupled", "coupled")


def penalised(model, X, y, lam, weights=None, regularization="decoupled", lr=0.5):
    """(problem, optimizer) carrying λ where 0.1's `regularization` mode put it."""
    assert regularization in MODES
    if regularization == "coupled":
        return refsam.Problem(model, X, y, weights, l2=lam), refsam.SGD(lr)
    return refsam.Problem(model, X, y, weights), refsam.SGD(lr, weight_decay=lam)


def total_l2(problem, optimizer):
    """The λ of the objective's L2 term, wherever it sits (loss or optimizer)."""
    return problem.l2 + (0.0 if optimizer is None else optimizer.weight_decay)


def _data(model, n, seed):
    """(problem-free) training and test data for `model` in {"logistic", "softmax", "mlp"}."""
    if model == "logistic":
        kw = {"n_features": 3, "n_classes": 2}
    elif model == "softmax":
        kw = {"n_features": 3, "n_classes": 3}
    else:
        kw = {"n_features": 2, "n_classes": 2}
    X, y, _ = refsam.make_gaussian_classification(n=n, separation=1.0, seed=seed, **kw)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=8, separation=1.0, seed=seed + 100, **kw)
    return X, y, X_test, y_test


def make_case(model, rule, rho=0.1, regularization="decoupled", weights=None):
    """(problem, sam, root, X_test, y_test) with a verified root (root.optimizer: the run's SGD, lr 0.5).
    Tiny MLP (2,4,2): d = 22."""
    if model == "mlp":
        X, y, X_test, y_test = _data("mlp", 50, 1)
        problem, optimizer = penalised(refsam.MLP((2, 4, 2)), X, y, 0.1, weights, regularization)
        start = refsam.train(problem, refsam.SAM(rho, rule), optimizer, 150, seed=0).theta_final
    else:
        X, y, X_test, y_test = _data(model, 50, 0)
        m = refsam.LogisticRegression() if model == "logistic" else refsam.SoftmaxRegression(3)
        problem, optimizer = penalised(m, X, y, 0.05, weights, regularization)
        start = problem.init_params(0)
    sam = refsam.SAM(rho, rule)
    return problem, sam, solve_fixed_point(problem, sam, start, optimizer=optimizer), X_test, y_test


def koh_liang(problem, theta, X_test, y_test, lam):
    """−∇f_kᵀ (H + λI)⁻¹ ∇ℓ_j / n with autograd derivatives (independent of refsam's hand derivatives)."""
    H = autograd.hessian(lambda t: problem.objective(t))(theta) + lam * np.eye(problem.d)
    train_grads = autograd.jacobian(lambda t: problem.model.losses(t, problem.X, problem.y))(theta)  # (n, d)
    test_grads = autograd.jacobian(lambda t: problem.model.losses(t, X_test, y_test))(theta)  # (m, d)
    return -(train_grads / problem.n) @ np.linalg.solve(H, test_grads.T)  # (n, m)


# -- exactness at a verified root: closed form = finite differences of the re-solved root ---------------
@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
def test_closed_form_equals_finite_differences_of_the_root(model, rule):
    problem, sam, root, X_test, y_test = make_case(model, rule)
    assert root.residual <= 1e-14
    opt = root.optimizer  # an array θ̂ needs the optimizer passed (its weight decay is part of G)
    indices = np.array([0, 7, 21, 40])
    influence = hessian_influence(problem, sam, root.theta, X_test, y_test, optimizer=opt)  # (n, m)
    expected = finite_difference_influence(problem, sam, root.theta, X_test, y_test, indices, optimizer=opt)
    assert influence.shape == (problem.n, len(y_test))
    assert rel_err(influence[indices], expected) <= RTOL_CLOSED_FORM_FD
    assert np.std(influence) > 1e-3 * np.max(np.abs(influence))  # not a constant
    # parameters and self-influence against the same oracle
    d_theta = parameter_influence(problem, sam, root.theta, optimizer=opt)
    fd_theta = finite_difference_parameters(problem, sam, root.theta, indices, optimizer=opt)
    assert rel_err(d_theta[indices], fd_theta) <= RTOL_CLOSED_FORM_FD
    X_own, y_own = problem.X[indices], problem.y[indices]
    own = finite_difference_influence(problem, sam, root.theta, X_own, y_own, indices,
                                      optimizer=opt)  # (k, k)
    assert rel_err(self_influence(problem, sam, root.theta, optimizer=opt)[indices], np.diag(own)) \
        <= RTOL_CLOSED_FORM_FD
    # the ablations are measurably different here, so the comparison above discriminates
    for variant in ("frozen", "erm"):
        ablation = hessian_influence(problem, sam, root.theta, X_test, y_test, variant, optimizer=opt)
        assert rel_err(ablation, influence) > MIN_DRIFT


@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
def test_closed_form_equals_finite_differences_in_coupled_mode_where_roots_exist(model):
    """Coupled mode (0.2: the loss's L2, Problem(l2=λ), and an SGD without weight decay) uses (H + λI) in
    place of H (module docstring); exact wherever a root exists. Coupled SAM/ASAM roots need a saddle of
    F + r nearby (docs/closed_form.md), so USAM is tested here."""
    problem, sam, root, X_test, y_test = make_case(model, "usam", regularization="coupled")
    assert problem.l2 == 0.1 if model == "mlp" else problem.l2 == 0.05
    assert root.optimizer.weight_decay == 0.0
    indices = np.array([3, 30])
    expected = finite_difference_influence(problem, sam, root.theta, X_test, y_test, indices,
                                           optimizer=root.optimizer)
    actual = hessian_influence(problem, sam, root, X_test, y_test)[indices]
    assert rel_err(actual, expected) <= RTOL_CLOSED_FORM_FD


@settings(max_examples=6)
@given(st.integers(0, 1000), st.sampled_from(["logistic", "softmax"]),
       st.sampled_from(["sam", "usam", "asam"]), st.sampled_from([0.01, 0.05]), st.sampled_from([0.05, 0.2]))
def test_closed_form_equals_finite_differences_on_random_problems(seed, model, rule, rho, lam):
    X, y, X_test, y_test = _data(model, 30, seed)
    m = refsam.LogisticRegression() if model == "logistic" else refsam.SoftmaxRegression(3)
    problem, sam = refsam.Problem(m, X, y), refsam.SAM(rho, rule)
    root = solve_fixed_point(problem, sam, problem.init_params(seed),
                             optimizer=refsam.SGD(0.5, weight_decay=lam))
    indices = np.array([0, 29])
    expected = finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    actual = hessian_influence(problem, sam, root, X_test, y_test)[indices]
    assert rel_err(actual, expected) <= RTOL_CLOSED_FORM_FD


def test_closed_form_equals_finite_differences_at_non_unit_weights():
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=50)
    problem, sam, root, X_test, y_test = make_case("logistic", "asam", weights=weights)
    indices = np.array([1, 2])
    expected = finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    actual = hessian_influence(problem, sam, root, X_test, y_test)[indices]
    assert rel_err(actual, expected) <= RTOL_CLOSED_FORM_FD


@pytest.mark.parametrize(("model", "rule", "regularization"),
                         [("logistic", "asam", "decoupled"), ("softmax", "usam", "decoupled"),
                          ("mlp", "sam", "decoupled"), ("mlp", "usam", "coupled")])
def test_hyperparameter_sensitivities_equal_finite_differences(model, rule, regularization):
    """0.1's d_weight_decay was the derivative in the λ of the mode in use: 0.2's d_weight_decay (the
    optimizer's λ) for "decoupled", d_l2 (the loss's λ) for "coupled"; the oracle re-solves with that
    λ ± h."""
    problem, sam, root, _, _ = make_case(model, rule, regularization=regularization)
    sens = hyperparameter_sensitivity(problem, sam, root.theta, optimizer=root.optimizer)
    h = 1e-5

    def root_at(rho, lam):
        p, opt = penalised(problem.model, problem.X, problem.y, lam, problem.weights, regularization)
        return solve_fixed_point(p, refsam.SAM(rho, rule), root.theta, optimizer=opt, tol=1e-13).theta

    if regularization == "coupled":
        rho, lam, d_lam = sam.rho, problem.l2, sens.d_l2
    else:
        rho, lam, d_lam = sam.rho, root.optimizer.weight_decay, sens.d_weight_decay
    fd_rho = (root_at(rho + h, lam) - root_at(rho - h, lam)) / (2 * h)
    fd_lam = (root_at(rho, lam + h) - root_at(rho, lam - h)) / (2 * h)
    if regularization == "coupled":  # coupled USAM roots are the stationary points of F + r: ρ-free
        assert np.max(np.abs(fd_rho)) == 0.0 and np.max(np.abs(sens.d_rho)) <= 1e-12
    else:
        assert rel_err(sens.d_rho, fd_rho) <= RTOL_CLOSED_FORM_FD
    assert rel_err(d_lam, fd_lam) <= RTOL_CLOSED_FORM_FD
    assert np.linalg.norm(d_lam) > 1e-3  # λ matters at this root


# -- the limit of differentiating training --------------------------------------------------------------
def test_closed_form_is_the_limit_of_autograd_through_converging_sam_training():
    """contract §3: at a stable root, d(test loss at θ_T)/dw → closed form as T → ∞ (error ∝ radius^T)."""
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=20, n_features=5, seed=1)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    sam, lr, lam, theta0 = refsam.SAM(0.05), 0.5, 1e-2, problem.init_params(0)
    grad_F = autograd.grad(lambda t, w: problem.objective(t, None, w))

    def test_loss_after_training(w, steps):  # contract §2's decoupled step, differentiable in w
        theta = theta0
        for _ in range(steps):
            w_hat = theta + sam.perturbation(theta, grad_F(theta, w))
            theta = theta - lr * (grad_F(w_hat, w) + lam * theta)
        return autograd.numpy.sum(problem.model.losses(theta, X_test, y_test))

    root = solve_fixed_point(problem, sam, theta0, optimizer=refsam.SGD(lr, weight_decay=lam))
    closed = hessian_influence(problem, sam, root.theta, X_test, y_test, optimizer=root.optimizer).sum(axis=1)
    errors = [rel_err(autograd.grad(test_loss_after_training)(np.ones(problem.n), T), closed)
              for T in (100, 1000)]
    assert errors[1] < 1e-4 * errors[0]
    assert errors[1] <= RTOL_CLOSED_FORM_FD


# -- actual removal --------------------------------------------------------------------------------------
def test_leave_one_out_on_logistic_n200_is_predicted_by_minus_influence():
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=20, n_features=5, seed=1)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    sam = refsam.SAM(0.05)
    root = solve_fixed_point(problem, sam, problem.init_params(0),
                             optimizer=refsam.SGD(0.5, weight_decay=1e-2))
    predicted = -hessian_influence(problem, sam, root, X_test, y_test)
    actual = leave_one_out(problem, sam, root, X_test, y_test)
    assert pearsonr(predicted.ravel(), actual.ravel())[0] >= 0.99
    assert spearmanr(predicted.ravel(), actual.ravel())[0] >= 0.99
    assert np.std(actual) > 1e-4  # removals do move the test losses


def test_leave_one_out_on_mlp_is_predicted_by_minus_influence():
    problem, sam, root, X_test, y_test = make_case("mlp", "sam", rho=0.05)
    predicted = -hessian_influence(problem, sam, root, X_test, y_test)
    actual = leave_one_out(problem, sam, root, X_test, y_test)
    assert pearsonr(predicted.ravel(), actual.ravel())[0] >= 0.9
    assert spearmanr(predicted.ravel(), actual.ravel())[0] >= 0.9


# -- ρ = 0 and the USAM/ERM identities ---------------------------------------------------------------
@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
def test_rho_zero_makes_every_variant_koh_liang(model):
    problem, sam, root, X_test, y_test = make_case(model, "sam", rho=0.0)
    expected = koh_liang(problem, root.theta, X_test, y_test, total_l2(problem, root.optimizer))
    for variant in ("full", "frozen", "erm"):
        influence = hessian_influence(problem, sam, root, X_test, y_test, variant)
        assert rel_err(influence, expected) <= RTOL_KOH_LIANG
    assert np.std(expected) > 0


@st.composite
def usam_convex_problems(draw, regularization):
    seed = draw(st.integers(0, 1000))
    softmax = draw(st.booleans())
    n_classes = 3 if softmax else 2
    # separation 0.5 and 20% flipped labels: non-separable, so λ = 0 still has a unique ERM root
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=2, n_classes=n_classes, separation=0.5,
                                                  flip_fraction=0.2, seed=seed)
    model = refsam.SoftmaxRegression(3) if softmax else refsam.LogisticRegression()
    lam = draw(st.sampled_from([0.01, 0.1])) if regularization == "coupled" else 0.0
    if regularization == "decoupled" and softmax:  # softmax needs λ > 0 (shift invariance)
        model, y = refsam.LogisticRegression(), (y > 0).astype(int)
    # coupled: the loss's L2 (λ > 0); decoupled with λ = 0: no L2 term anywhere (no optimizer weight decay)
    problem = refsam.Problem(model, X, y, l2=lam)
    rho = draw(st.sampled_from([0.05, 0.2, 0.5]))
    return problem, refsam.SAM(rho, "usam"), X[:6] + 0.1, y[:6]


@settings(max_examples=8)
@given(st.one_of(usam_convex_problems("coupled"), usam_convex_problems("decoupled")))
def test_usam_root_of_convex_objective_is_the_erm_root_and_its_influence_is_erms(case):
    """Holds when USAM perturbs along the gradient of the whole objective Φ it descends (coupled mode, or
    λ = 0): G(θ) = ∇Φ(θ + ρ∇Φ(θ)) vanishes iff θ + ρ∇Φ(θ) = θ* (strict convexity), and θ ↦ θ + ρ∇Φ(θ)
    is injective, so θ̂ = θ*; then ∂G/∂θ = A(I + ρA) and ∂G/∂w_j = (I + ρA)∇ℓ_j/n with A = ∇²Φ(θ*):
    the factors (I + ρA) cancel, dθ̂/dw_j = −A⁻¹∇ℓ_j/n — ERM's."""
    problem, sam, X_test, y_test = case
    erm = solve_fixed_point(problem, refsam.SAM(0.0), np.zeros(problem.d))
    usam = solve_fixed_point(problem, sam, erm.theta + 0.1)
    assert rel_err(usam.theta, erm.theta) <= RTOL_SAME_FORMULA
    full = hessian_influence(problem, sam, usam, X_test, y_test, "full")
    assert rel_err(full, hessian_influence(problem, sam, usam, X_test, y_test, "erm")) <= RTOL_SAME_FORMULA
    assert rel_err(full, koh_liang(problem, usam.theta, X_test, y_test, problem.l2)) <= RTOL_SAME_FORMULA


@settings(max_examples=6)
@given(st.integers(0, 1000), st.sampled_from([0.05, 0.2]), st.sampled_from([0.01, 0.1]))
def test_decoupled_usam_with_weight_decay_is_not_erm(seed, rho, lam):
    """The issue's "USAM root = ERM root" fails in decoupled mode with λ > 0: at the ERM root
    ∇F(θ*) = −λθ*, so G(θ*) = ∇F(θ* − ρλθ*) + λθ* ≈ ρλ H θ* ≠ 0."""
    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=2, seed=seed)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    optimizer = refsam.SGD(0.5, weight_decay=lam)  # 0.1's decoupled λ: the optimizer's weight decay
    sam = refsam.SAM(rho, "usam")
    erm = solve_fixed_point(problem, refsam.SAM(0.0), np.zeros(problem.d), optimizer=optimizer)
    usam = solve_fixed_point(problem, sam, erm.theta, optimizer=optimizer)
    # θ* is not a USAM root
    assert np.linalg.norm(residual_map(problem, sam, erm.theta, optimizer=optimizer)) > 1e-6
    assert rel_err(usam.theta, erm.theta) > 1e-5
    X_test, y_test = X[:6] + 0.1, y[:6]
    full = hessian_influence(problem, sam, usam, X_test, y_test)
    assert rel_err(full, hessian_influence(problem, sam, usam, X_test, y_test, "erm")) > 1e-5


# -- the documented rule at a point that is not a root ----------------------------------------------------
@pytest.fixture(scope="module")
def not_a_root():
    problem, sam, root, X_test, y_test = make_case("logistic", "sam")
    early = refsam.train(problem, sam, root.optimizer, 10, seed=0).theta_final
    return problem, sam, early, root.optimizer, X_test, y_test


def test_non_root_raises_by_default_with_the_residual(not_a_root):
    problem, sam, theta, opt, X_test, y_test = not_a_root
    residual = np.linalg.norm(residual_map(problem, sam, theta, optimizer=opt))
    assert residual > 1e-3
    for call in (lambda: hessian_influence(problem, sam, theta, X_test, y_test, optimizer=opt),
                 lambda: parameter_influence(problem, sam, theta, "erm", optimizer=opt),
                 lambda: self_influence(problem, sam, theta, optimizer=opt),
                 lambda: hyperparameter_sensitivity(problem, sam, theta, optimizer=opt)):
        with pytest.raises(UnverifiedRootError, match=r"not a verified root .* ‖G\(theta\)‖ = \d") as info:
            call()
        assert info.value.residual == pytest.approx(residual)
        assert f"{residual:.3e}" in str(info.value)


def test_non_root_message_includes_the_proof_when_no_root_can_exist():
    X, y, X_test, y_test = _data("logistic", 30, 0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, l2=0.1)  # 0.1's coupled mode
    with pytest.raises(UnverifiedRootError, match=r"not a verified root .* has no solution .* 2-cycle"):
        hessian_influence(problem, refsam.SAM(0.05), problem.init_params(0), X_test, y_test)


def test_non_root_warns_and_returns_the_approximation_on_request(not_a_root):
    problem, sam, theta, opt, X_test, y_test = not_a_root
    with pytest.warns(UnverifiedRootWarning, match=r"not a verified root"):
        approx = hessian_influence(problem, sam, theta, X_test, y_test, on_unverified="warn", optimizer=opt)
    assert approx.shape == (problem.n, len(y_test)) and np.all(np.isfinite(approx))
    # a looser root_tol accepts the same point silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hessian_influence(problem, sam, theta, X_test, y_test, root_tol=1.0, optimizer=opt)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"variant": "exact"}, r"`variant` must be one of \['erm', 'frozen', 'full'\], got 'exact'"),
    ({"on_unverified": "ignore"}, r"`on_unverified` must be one of \['raise', 'warn'\], got 'ignore'"),
    ({"root_tol": -1.0}, r"`root_tol` must be a finite number > 0, got -1.0"),
    ({"X_test": np.zeros((2, 5)), "y_test": [0, 1]}, r"`X_test` must have shape \(m >= 1, 3\)"),
    ({"y_test": [0, 1]}, r"`y_test` must have shape \(8,\)"),
])
def test_invalid_arguments_name_argument_expected_and_got(kwargs, message):
    problem, sam, root, X_test, y_test = make_case("logistic", "sam")
    args = {"X_test": X_test, "y_test": y_test, **kwargs}
    with pytest.raises(ValueError, match=message):
        hessian_influence(problem, sam, root.theta, **args, optimizer=root.optimizer)


def test_worked_example_in_docs_runs():
    """docs/closed_form.md's worked example asserts against finite differences and leave-one-out."""
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "closed_form.md").read_text()
    block = re.search(r"<!-- worked example -->\s*```python\n(.*?)```", page, re.S)
    assert block is not None
    exec(compile(block.group(1), "docs/closed_form.md", "exec"), {})
