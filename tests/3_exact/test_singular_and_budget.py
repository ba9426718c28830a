"""Singular systems raise the documented LinAlgError (judged against J's own scale, not by cond = inf),
and the root finder honours its budget exactly."""

import numpy as np
import pytest

import refsam
import refsam.influence.fixed_point as fixed_point_module
from refsam.models import build_model
from refsam.training.step import sam_gradient


def _constant_feature_problem():
    """Logistic regression, λ = 0, USAM, with feature 1 constant: it moves exactly like the bias, so
    ∂G/∂θ has the null vector e_bias − e_1 — but its computed cond is finite (~1e18)."""
    rng = np.random.default_rng(0)
    n = 40
    X = rng.normal(size=(n, 3))
    y = ((X[:, 0] + rng.normal(size=n)) > 0).astype(int)
    sam = refsam.SAM(0.05, "usam")
    model = build_model("logistic", 3)
    X_zero = X.copy()
    X_zero[:, 1] = 0.0  # the same data without the constant column has an isolated root
    theta = refsam.solve_fixed_point(refsam.Problem(model, X_zero, y), sam, np.zeros(4)).theta
    X[:, 1] = 1.0
    problem = refsam.Problem(model, X, y)
    assert np.linalg.norm(sam_gradient(problem, sam, theta, None, None).descent) < 1e-12  # λ = 0: G = g̃
    return problem, sam, theta, X, y


@pytest.mark.parametrize("variant", ["full", "frozen", "erm"])
def test_a_constant_feature_beside_the_bias_raises_linalgerror_not_nan(variant):
    problem, sam, theta, X, y = _constant_feature_problem()
    assert np.isfinite(np.linalg.cond(problem.hessian(theta)))  # why `cond == inf` alone missed it
    with pytest.raises(np.linalg.LinAlgError, match=r"singular at `theta`.*constant feature"):
        refsam.hessian_influence(problem, sam, theta, X[:3], y[:3], variant=variant)


def test_an_ill_conditioned_but_regular_system_still_solves_with_a_warning():
    problem, sam, theta, X, y = _constant_feature_problem()
    tiny = refsam.SGD(0.5, weight_decay=1e-13)  # cond ≈ 1e13 < 1/(d·eps)
    root = refsam.solve_fixed_point(problem, sam, theta, optimizer=tiny)
    with pytest.warns(RuntimeWarning, match="condition number"):
        scores = refsam.hessian_influence(problem, sam, root.theta, X[:3], y[:3], optimizer=tiny)
    assert np.all(np.isfinite(scores))


@pytest.mark.parametrize("method", ["ptc", "hybr", "lm", "newton"])
@pytest.mark.parametrize("max_iter", [1, 2, 5])
def test_the_root_finder_evaluates_at_most_max_iter_jacobians(monkeypatch, method, max_iter):
    calls = {"jacobians": 0}
    original = fixed_point_module.linearise

    def counting(*args, **kwargs):
        calls["jacobians"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(fixed_point_module, "linearise", counting)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 2, 60)
    problem = refsam.Problem(build_model("logistic", 5), X, y)
    fp = refsam.solve_fixed_point(problem, refsam.SAM(0.05, "sam"), np.full(6, 3.0),
                                  optimizer=refsam.SGD(0.5, weight_decay=1e-3), tol=1e-300,
                                  max_iter=max_iter, method=method, raise_on_failure=False)
    # the diagnostics of the returned point linearise once more, after the search
    assert calls["jacobians"] <= max_iter + 1
    assert fp.iterations <= max_iter
