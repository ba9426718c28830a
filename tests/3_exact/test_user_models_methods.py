"""A model the user writes (only its per-sample loss, in autograd.numpy) goes through every method:
training, the fixed point, the closed form (every variant), the trajectory methods (exact and
approximate) and both ground truths — and a user re-implementation of the built-in logistic loss gives
the built-in model's numbers to round-off."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest

import refsam
from refsam.models import AutogradDerivatives
from refsam.tolerances import (
    CANCEL_WARN,
    RTOL_CLOSED_FORM_FD,
    RTOL_EXACT_METHODS,
    RTOL_TRAJECTORY_FD,
    RTOL_USER_MODEL,
    rel_err,
)

USER_MODELS = ["probit", "smoothed_logistic"]


def _data(seed=3):
    X, y, _ = refsam.make_gaussian_classification(n=24, n_features=2, separation=1.0, seed=seed)
    return X[:20], y[:20], X[20:], y[20:]


@pytest.fixture(scope="module", params=USER_MODELS)
def user_root(request, user_models):
    """A converged full-batch decoupled SAM run of a user model and its verified root."""
    X, y, X_test, y_test = _data()
    problem = refsam.Problem(user_models[request.param], X, y)
    sam, optimizer = refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.05)  # decoupled: λ in the optimizer
    run = refsam.train(problem, sam, optimizer, 150, seed=0)
    root = refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=optimizer)
    return problem, sam, root, X_test, y_test


def test_a_user_model_has_a_verified_root_and_its_closed_form_equals_re_solved_differences(user_root):
    problem, sam, root, X_test, y_test = user_root
    assert root.converged and root.residual <= 1e-12 and root.stable
    indices = np.array([0, 7, 19])
    expected = refsam.finite_difference_influence(problem, sam, root, X_test, y_test, indices)
    actual = refsam.hessian_influence(problem, sam, root, X_test, y_test)[indices]
    assert np.max(np.abs(expected)) > 1e-4  # not trivially zero
    assert rel_err(actual, expected) <= RTOL_CLOSED_FORM_FD
    for variant in ("frozen", "erm"):  # the ablations run and differ from the exact closed form
        ablation = refsam.hessian_influence(problem, sam, root, X_test, y_test, variant=variant)
        assert np.all(np.isfinite(ablation)) and rel_err(ablation[indices], actual) > RTOL_CLOSED_FORM_FD
    loo = refsam.leave_one_out(problem, sam, root, X_test, y_test, indices)
    assert np.corrcoef(loo.ravel(), -actual.ravel())[0, 1] > 0.99  # removal is predicted by −I_j
    assert np.all(np.isfinite(refsam.self_influence(problem, sam, root)))


@pytest.mark.parametrize("name", USER_MODELS)
@pytest.mark.parametrize(("rule", "regularization"), [("sam", "decoupled"), ("asam", "coupled")])
def test_a_user_model_s_trajectory_methods_agree_with_autodiff_and_replays(user_models, name, rule,
                                                                          regularization):
    X, y, X_test, y_test = _data(seed=4)
    coupled = regularization == "coupled"  # 0.1's modes: λ in the loss, or in the optimizer
    problem = refsam.Problem(user_models[name], X, y, l2=0.05 if coupled else 0.0)
    optimizer = refsam.SGD(0.3, weight_decay=0.0 if coupled else 0.05)
    run = refsam.train(problem, refsam.SAM(0.1, rule), optimizer, 8, batch_size=6, seed=1)
    exact = {m: refsam.trajectory_influence(problem, run, X_test, y_test, method=m)
             for m in ("adjoint", "forward", "autodiff")}
    assert np.max(np.abs(exact["autodiff"])) > 1e-4
    assert rel_err(exact["adjoint"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    assert rel_err(exact["forward"], exact["autodiff"]) <= RTOL_EXACT_METHODS
    fd = refsam.finite_difference_replay(problem, run, X_test, y_test)
    assert rel_err(exact["adjoint"], fd) <= RTOL_TRAJECTORY_FD
    params = refsam.trajectory_parameter_influence(problem, run)
    params_autodiff = refsam.trajectory_parameter_influence(problem, run, "autodiff")
    assert rel_err(params, params_autodiff) <= RTOL_EXACT_METHODS
    for method in ("first_order", "first_order_unperturbed", "tracin", "tracin_unperturbed"):
        approx = refsam.trajectory_influence(problem, run, X_test, y_test, method=method)
        assert np.all(np.isfinite(approx)) and np.ptp(approx) > 0
    loo = refsam.leave_one_out_replay(problem, run, X_test, y_test, indices=[0, 5])
    assert np.all(np.isfinite(loo)) and np.max(np.abs(loo)) > 0


def test_a_user_re_implementation_of_the_logistic_loss_gives_the_built_in_numbers(user_models):
    X, y, X_test, y_test = _data(seed=5)
    builtin = refsam.Problem(refsam.LogisticRegression(), X, y)
    user = refsam.Problem(user_models["hand_logistic"], X, y)
    sam, optimizer = refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.05)
    runs = [refsam.train(p, sam, optimizer, 150, seed=0) for p in (builtin, user)]
    assert rel_err(runs[1].thetas, runs[0].thetas) <= RTOL_USER_MODEL
    roots = [refsam.solve_fixed_point(p, sam, r.theta_final, optimizer=optimizer)
             for p, r in zip((builtin, user), runs)]
    assert rel_err(roots[1].theta, roots[0].theta) <= RTOL_USER_MODEL
    for variant in ("full", "frozen", "erm"):
        a, b = (refsam.hessian_influence(p, sam, r, X_test, y_test, variant=variant)
                for p, r in zip((builtin, user), roots))
        assert rel_err(b, a) <= RTOL_USER_MODEL, variant
    minibatch = [refsam.train(p, refsam.SAM(0.1, "asam"), optimizer.replace(lr=0.3), 10, batch_size=7, seed=2)
                 for p in (builtin, user)]
    for method in ("adjoint", "forward", "tracin"):
        a, b = (refsam.trajectory_influence(p, r, X_test, y_test, method=method)
                for p, r in zip((builtin, user), minibatch))
        assert rel_err(b, a) <= RTOL_USER_MODEL, method


class _CountingDerivatives(AutogradDerivatives):
    """autograd's derivatives, counting the exact per-sample gradient norms they are asked for."""

    calls = 0

    def per_sample_grad_norms(self):
        type(self).calls += 1
        return super().per_sample_grad_norms()


class _CountingLogistic(refsam.Model):
    """The logistic loss as a user writes it, with the counting derivatives."""

    n_classes = 2

    def n_params(self, n_features):
        return n_features + 1

    def losses(self, theta, X, y):
        return anp.logaddexp(0.0, (1.0 - 2.0 * y) * (anp.dot(X, theta[:-1]) + theta[-1]))

    def derivatives(self, theta, design, y, c=None):
        return _CountingDerivatives(self, theta, design, y, c)


@pytest.mark.parametrize(("last_weight", "warns", "exact_sums"),
                         [(1e-12, True, True), (100 * CANCEL_WARN, False, True), (1.0, False, False)],
                         ids=["cancelled", "small_but_above_round_off", "ordinary"])
def test_a_user_model_warns_on_a_cancelled_gradient_as_the_built_in_does(last_weight, warns, exact_sums):
    """The cancellation check of a user model first bounds the terms by a few evaluations of its losses
    (d, n > 4 here, so the screen runs): a cancelled gradient (pairs of equal x with opposite labels cancel
    at θ = 0; the last point's weight sets ‖g‖/‖terms‖) still warns, as the built-in model does, and a
    small gradient above round-off still does not, both after the exact per-sample gradients; an ordinary
    run never pays for them. The influences equal the built-in model's either way."""
    rng = np.random.default_rng(0)
    pairs = rng.standard_normal((3, 5))
    X = np.vstack([pairs, pairs, rng.standard_normal((1, 5))])  # (7, 5): d = 6
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    weights = np.r_[np.ones(6), last_weight]
    sam, optimizer = refsam.SAM(0.05, "sam", norm_eps=0.0), refsam.SGD(0.1)
    scores = []
    for model in (refsam.LogisticRegression(), _CountingLogistic()):
        problem = refsam.Problem(model, X, y, weights=weights)
        run = refsam.train(problem, sam, optimizer, 3, theta0=np.zeros(6))
        _CountingDerivatives.calls = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores.append(refsam.trajectory_influence(problem, run, X[:1], y[:1]))
        cancelled = [w for w in caught if "of the size of the per-sample terms" in str(w.message)]
        assert bool(cancelled) == warns, model
    assert (_CountingDerivatives.calls > 0) == exact_sums
    assert np.max(np.abs(scores[0])) > 0
    assert rel_err(scores[1], scores[0]) <= RTOL_USER_MODEL
