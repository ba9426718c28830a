"""Rung 1 for models a user brings: ``refsam.kit.testing.check_grads`` is a derivative oracle that passes
on correct derivatives (the autograd defaults of user models, the built-in hand derivatives) and fails on
a wrong one."""

import numpy as np
import pytest

import refsam
from refsam.kit.testing import check_grads
from refsam.models import LogisticDerivatives


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
