"""Rung 1 for models a user brings: ``refsam.kit.testing.check_grads`` is a derivative oracle that passes
on correct derivatives (the autograd defaults of user models, the built-in hand derivatives) and fails on
a wrong one."""

import autograd.numpy as anp
import numpy as np
import pytest

import refsam
from refsam.kit.testing import check_grads
from refsam.models import LogisticDerivatives


class PlainLogistic(refsam.Model):
    """The built-in logistic loss on the raw X, as a user writes it (autograd derivatives)."""

    n_classes = 2

    def n_params(self, p):
        return p + 1

    def losses(self, t, X_, y_):
        return anp.logaddexp(0.0, (1.0 - 2.0 * y_) * (anp.dot(X_, t[:-1]) + t[-1]))


def _data(p=3, n=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = rng.integers(0, 2, n)
    c = rng.uniform(0.1, 1.0, n)
    return X, y, c, rng


@pytest.mark.parametrize("name", ["probit", "smoothed_logistic", "hand_logistic"])
def test_user_models_pass_the_derivative_oracle(user_models, name):
    X, y, c, rng = _data()
    model = user_models[name]
    theta = 0.5 * rng.standard_normal(model.n_params(X.shape[1]))
    check_grads(model, theta, X, y, c)  # autograd defaults vs autograd (trivially) and vs finite differences


@pytest.mark.parametrize("model", [refsam.LogisticRegression(), refsam.SoftmaxRegression(3),
                                   refsam.MLP((3, 4, 3), "tanh"), refsam.MLP((3, 2, 3, 2), "softplus")],
                         ids=["logistic", "softmax", "mlp1", "mlp2"])
def test_built_in_hand_derivatives_pass_the_derivative_oracle(model):
    X, _, c, rng = _data(seed=1)
    y = rng.integers(0, model.n_classes, X.shape[0])
    theta = 0.5 * rng.standard_normal(model.n_params(X.shape[1]))
    check_grads(model, theta, X, y, c)


class _OffByOnePercent(LogisticDerivatives):
    def grad(self):
        return 1.01 * super().grad()


class _WrongGradientLogistic(refsam.LogisticRegression):
    def derivatives(self, theta, X, y, c=None):
        return _OffByOnePercent(self, theta, X, y, c)


class _WrongHvpDerivatives(LogisticDerivatives):
    def hvp_and_jvp(self, V):
        HV, JV = super().hvp_and_jvp(V)
        return HV + 1e-6 * np.asarray(V).reshape(HV.shape), JV


class _WrongHvpLogistic(refsam.LogisticRegression):
    def derivatives(self, theta, X, y, c=None):
        return _WrongHvpDerivatives(self, theta, X, y, c)


@pytest.mark.parametrize(("model", "product"), [(_WrongGradientLogistic(), r"grad\(\)"),
                                                (_WrongHvpLogistic(), r"hvp")])
def test_the_derivative_oracle_rejects_a_wrong_derivative(model, product):
    X, y, c, rng = _data(seed=2)
    theta = 0.5 * rng.standard_normal(model.n_params(X.shape[1]))
    with pytest.raises(AssertionError, match=product):
        check_grads(model, theta, X, y, c)


@pytest.mark.parametrize("n", [2, 9], ids=["d_at_least_n", "d_below_n"])
def test_autograd_derivatives_by_reverse_of_reverse_equal_the_hand_written_ones(n):
    """A user model's (H v, J v) come from one trace per point (reverse-of-reverse on J(θ)ᵀu, whose value
    is also ∇L), J v alone from a trace of the losses, and its per-sample gradients from d JVP columns
    where d < n (else n VJP rows): every branch against the built-in logistic model's hand-written
    derivatives (an independent derivation), columns one and several, ∇L before and after the trace."""
    from refsam.models import AutogradDerivatives

    X, y, c, rng = _data(p=3, n=n, seed=3)
    model = refsam.LogisticRegression()
    theta = 0.5 * rng.standard_normal(4)
    design = model.design(X)

    user = AutogradDerivatives(PlainLogistic(), theta, X, y, c)
    hand = model.derivatives(theta, design, y, c)
    V = rng.standard_normal((4, 3))
    np.testing.assert_allclose(user.grad(), hand.grad(), rtol=1e-13, atol=1e-15)  # before any trace
    for got, expected in zip(user.hvp_and_jvp(V), hand.hvp_and_jvp(V)):  # (H V, J V) from one trace
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(user.grad(), hand.grad(), rtol=1e-13, atol=1e-15)  # the trace's value
    np.testing.assert_allclose(user.per_sample_grads(), hand.per_sample_grads(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(user.jvp(V), hand.jvp(V), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(user.jvp(V[:, 0]), hand.jvp(V[:, 0]), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(user.hvp(V), hand.hvp(V), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(user.hessian(), hand.hessian(), rtol=1e-13, atol=1e-15)


def test_autograd_derivatives_keep_their_point_and_pickle():
    """The traces freeze θ: the object owns its θ and c (an in-place edit of the caller's array does not
    split it between two points), and pickles without its traces (found in review)."""
    import pickle

    from refsam.models import AutogradDerivatives

    X, y, c, rng = _data(p=3, n=9, seed=4)
    model = refsam.LogisticRegression()

    theta = 0.5 * rng.standard_normal(4)
    user = AutogradDerivatives(PlainLogistic(), theta, X, y, c)
    v = rng.standard_normal(4)
    before = user.hvp(v), user.grad()
    theta += 1.0  # the caller edits its array in place
    np.testing.assert_array_equal(user.hvp(v), before[0])
    np.testing.assert_array_equal(user.grad(), before[1])
    clone = pickle.loads(pickle.dumps(user))
    hand = model.derivatives(theta - 1.0, model.design(X), y, c)
    np.testing.assert_allclose(clone.hvp(v), hand.hvp(v), rtol=1e-13, atol=1e-15)


def test_a_user_model_s_gradient_norm_sum_is_exact_unless_a_bound_suffices():
    """Σ_i |c_i| ‖∇ℓ_i‖, the cancellation check's denominator: a user model returns the exact sum (equal to
    the hand-written norms) unless the caller's threshold lies above the screen's bound; the bound is
    then returned, and it lies above the exact sum (on 200 draws of θ, c and data) and within its
    margin of it (not a constant)."""
    from refsam.models import AutogradDerivatives
    from refsam.tolerances import CANCEL_SCREEN_MARGIN

    model = refsam.LogisticRegression()
    ratios = []
    for seed in range(200):
        X, y, c, rng = _data(p=6, n=9, seed=seed)  # min(n, d) above the screen's 4 probes
        c = c * rng.choice([-1.0, 1.0], c.shape)  # |c_i|: the sum reads magnitudes
        theta = rng.standard_normal(7) * rng.choice([0.1, 1.0, 10.0])
        exact = model.derivatives(theta, model.design(X), y, c).weighted_grad_norm_sum()
        user = AutogradDerivatives(PlainLogistic(), theta, X, y, c)
        np.testing.assert_allclose(user.weighted_grad_norm_sum(), exact, rtol=1e-13)
        np.testing.assert_allclose(user.weighted_grad_norm_sum(below=0.5 * CANCEL_SCREEN_MARGIN * exact),
                                   exact, rtol=1e-13)  # the bound is not below the threshold: exact
        bound = user.weighted_grad_norm_sum(below=1e300)
        assert exact < bound < 1e300
        ratios.append(bound / exact)
    assert 1.0 < min(ratios) and max(ratios) < CANCEL_SCREEN_MARGIN * 3.0 * 4.0  # ≤ M·√n·(probe spread)
    assert np.ptp(ratios) > 0
