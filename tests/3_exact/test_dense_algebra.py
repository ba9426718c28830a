"""The minimum dense work: the condition number from the LU already computed (LAPACK gecon, not an
SVD) and the spectral radius from ARPACK above DENSE_EIGEN_MAX, each against the dense reference."""

import numpy as np
import pytest

import refsam.influence.fixed_point as fixed_point
from refsam.influence.linearisation import factorise
from refsam.training import SGD


@pytest.mark.parametrize("log_cond", [0, 4, 10])
def test_the_lu_condition_estimate_brackets_the_exact_1_norm_condition_number(log_cond):
    rng = np.random.default_rng(log_cond)
    d = 60
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    J = U @ np.diag(np.logspace(0, -log_cond, d)) @ V.T
    exact = np.linalg.cond(J, 1)
    estimate = factorise(J).condition_number
    assert exact / 10 <= estimate <= exact * (1 + 1e-9)  # gecon bounds ‖J⁻¹‖₁ from below, within ~3×
    assert not factorise(J).singular


@pytest.mark.parametrize("J", [np.zeros((3, 3)), np.array([[1.0, 2.0], [2.0, 4.0]]),
                               np.diag([1.0, 1e-17, 1.0])])
def test_singular_relative_to_its_own_scale(J):
    factors = factorise(J)
    assert factors.singular and factors.condition_number == np.inf


@pytest.mark.parametrize("optimizer", [None, SGD(0.3, momentum=0.9), SGD(0.3, momentum=0.9, nesterov=True),
                                       SGD(0.3, momentum=0.5, dampening=0.3)],
                         ids=["sgd", "heavy", "nesterov", "damped"])
def test_arpack_spectral_radius_equals_the_dense_one(optimizer, monkeypatch):
    rng = np.random.default_rng(0)
    d = fixed_point.DENSE_EIGEN_MAX + 44
    A = rng.standard_normal((d, d))
    J = A @ A.T / d + 0.1 * np.eye(d) + 0.05 * rng.standard_normal((d, d))  # non-symmetric, like SAM's
    iterative = fixed_point.spectral_radius(J, 0.3, optimizer)
    monkeypatch.setattr(fixed_point, "DENSE_EIGEN_MAX", 10**9)
    dense = fixed_point.spectral_radius(J, 0.3, optimizer)
    assert abs(iterative - dense) <= 1e-10 * dense
    monkeypatch.setattr(fixed_point, "_iterative_spectral_radius", lambda *args: None)  # no convergence
    monkeypatch.setattr(fixed_point, "DENSE_EIGEN_MAX", 10)
    assert fixed_point.spectral_radius(J, 0.3, optimizer) == dense  # falls back to the dense path


# -- full-batch derivatives reused within one closed form (objective.reuse_derivatives) -----------------

def _logistic_problem(n=60, p=4):
    import refsam

    X, y, _ = refsam.make_gaussian_classification(n, p, 2, seed=3)
    return refsam.Problem(refsam.LogisticRegression(), X, y)  # 0.1's weight_decay=0.01: now the optimizer's


def test_the_closed_form_builds_the_full_batch_derivatives_once_per_point(monkeypatch):
    """θ̂ and ŵ: two derivative objects on the training set (the test set's are separate), where the
    root check, the two Hessians and the products with ∂G/∂w built seven; the same numbers as without."""
    import refsam
    from refsam.models.linear import LogisticDerivatives

    problem = _logistic_problem()
    sam = refsam.SAM(0.05)
    root = refsam.solve_fixed_point(problem, sam, np.zeros(problem.d), optimizer=SGD(0.5, weight_decay=0.01))
    built = []
    original = LogisticDerivatives.__init__

    def counting(self, model, theta, X, *args, **kwargs):
        built.append(X.shape[0])
        original(self, model, theta, X, *args, **kwargs)

    monkeypatch.setattr(LogisticDerivatives, "__init__", counting)
    reused = refsam.hessian_influence(problem, sam, root, problem.X[:3], problem.y[:3])
    assert built.count(problem.n) == 2
    built.clear()
    from refsam.influence import closed_form

    # the undecorated function: no store, every call builds its own object; the same numbers, bit for bit
    fresh = closed_form.hessian_influence.__wrapped__(problem, sam, root, problem.X[:3], problem.y[:3])
    assert built.count(problem.n) > 2
    np.testing.assert_array_equal(reused, fresh)


def test_reuse_is_keyed_by_content_and_scoped_to_the_block():
    from refsam.objective import reuse_derivatives

    problem = _logistic_problem()
    theta = np.full(problem.d, 0.1)
    assert problem.at(theta) is not problem.at(theta)  # outside a block: nothing kept
    with reuse_derivatives():
        first = problem.at(theta)
        assert problem.at(theta.copy()) is first  # same content, another array
        theta[0] = 0.3  # an in-place edit is a new point, never a stale object
        edited = problem.at(theta)
        assert edited is not first
        np.testing.assert_array_equal(edited.grad(), problem.model.derivatives(
            theta, problem.design, problem.y, problem.weights / problem.n).grad())
        weights = problem.weights.copy()
        weights[1] = 0.0
        assert problem.at(theta, weights=weights) is not edited  # other weights: another object
        assert problem.at(theta, np.arange(5)) is not problem.at(theta, np.arange(5))  # batches: never
        with reuse_derivatives():  # nested: the outer store
            assert problem.at(theta) is edited
    assert problem.at(theta) is not edited


def test_each_thread_has_its_own_store():
    from concurrent.futures import ThreadPoolExecutor

    from refsam.objective import reuse_derivatives

    problem = _logistic_problem()
    theta = np.full(problem.d, 0.1)
    with reuse_derivatives():
        mine = problem.at(theta)
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(problem.at, theta).result()  # a new thread: no store of its own
    assert other is not mine
