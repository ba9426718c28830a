"""The MLP's hand-written second derivatives (R-operator HVP, layer-wise Hessian) equal autograd's.

Oracle: :class:`refsam.models.AutogradDerivatives`, which differentiates ``MLP.losses`` with autograd
and shares no code with the hand derivation (rung 1 of the ladder: rel. err ≤ RTOL_DERIVATIVE).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsam import MLP, Problem
from refsam.models import AutogradDerivatives, build_model
from refsam.tolerances import RTOL_DERIVATIVE, RTOL_FD_HVP, rel_err

ACTIVATIONS = ("tanh", "softplus", "sigmoid")



def random_case(sizes, activation, n, seed, theta_scale=0.5):
    """A small MLP, data, a θ away from the init (so every activation's curvature matters), weights c."""
    rng = np.random.default_rng(seed)
    model = MLP(sizes, activation)
    d = model.n_params(sizes[0])
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    theta = model.init_params(sizes[0], rng) + theta_scale * rng.standard_normal(d)
    c = rng.uniform(-0.5, 1.0, n)  # any real coefficients, including negative ones and ~0
    return model, X, y, theta, c, rng


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sizes", [(3, 2), (3, 4, 3), (4, 5, 3, 2), (2, 3, 4, 3, 3)],
                         ids=["depth0", "depth1", "depth2", "depth3"])
def test_mlp_hessian_and_hvp_equal_autograd(activation, sizes):
    model, X, y, theta, c, rng = random_case(sizes, activation, n=9, seed=len(sizes))
    v = rng.standard_normal(theta.shape[0])
    H_oracle = AutogradDerivatives(model, theta, X, y, c).hessian()
    H = model.hessian(theta, X, y, c)
    assert np.max(np.abs(H_oracle)) > 1e-3  # not trivially zero
    assert rel_err(H, H_oracle) <= RTOL_DERIVATIVE
    assert np.array_equal(H, H.T)
    oracle = AutogradDerivatives(model, theta, X, y, c)
    assert rel_err(model.hvp(theta, X, y, c, v), oracle.hvp(v)) <= RTOL_DERIVATIVE


@settings(max_examples=10)
@given(
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3),
    n_features=st.integers(1, 4),
    n_classes=st.integers(2, 4),
    n=st.integers(1, 8),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**16),
)
def test_mlp_hessian_equals_autograd_for_random_shapes(hidden, n_features, n_classes, n, activation,
                                                       seed):
    sizes = (n_features, *hidden, n_classes)
    model, X, y, theta, c, rng = random_case(sizes, activation, n, seed, theta_scale=1.0)
    H_oracle = AutogradDerivatives(model, theta, X, y, c).hessian()
    assert rel_err(model.hessian(theta, X, y, c), H_oracle) <= RTOL_DERIVATIVE
    v = rng.standard_normal(theta.shape[0])
    assert rel_err(model.hvp(theta, X, y, c, v), H_oracle @ v) <= RTOL_DERIVATIVE


def test_batched_hessian_rows_equal_single_hvps():
    """The R-operator on k stacked directions gives the k HVPs one at a time (the batching is exact)."""
    model, X, y, theta, c, rng = random_case((3, 5, 4, 3), "tanh", n=7, seed=3)
    V = rng.standard_normal((4, theta.shape[0]))
    rows = model.at(theta, X, y, c).hvp(V.T).T
    singles = np.stack([AutogradDerivatives(model, theta, X, y, c).hvp(v) for v in V])
    assert rel_err(rows, singles) <= RTOL_DERIVATIVE


def test_hessian_blocks_do_not_depend_on_the_block_size(monkeypatch):
    """Assembly one unit and one sample at a time (H summed over sample chunks) gives the same matrix."""
    import refsam.models.mlp as mlp

    model, X, y, theta, c, _ = random_case((3, 6, 5, 2), "softplus", n=6, seed=5)
    H_default = model.hessian(theta, X, y, c)
    monkeypatch.setattr(mlp, "BLOCK_FLOATS", 1)
    H_tiny_blocks = model.hessian(theta, X, y, c)
    assert rel_err(H_tiny_blocks, H_default) <= RTOL_DERIVATIVE
    assert rel_err(H_default, AutogradDerivatives(model, theta, X, y, c).hessian()) <= RTOL_DERIVATIVE


def test_hvp_matches_central_differences_of_the_gradient():
    """An oracle independent of autograd: (∇F(θ + h v) − ∇F(θ − h v)) / 2h → H v, error O(h²)."""
    model, X, y, theta, c, rng = random_case((4, 6, 3), "sigmoid", n=10, seed=7)
    v = rng.standard_normal(theta.shape[0])
    h = 1e-5
    fd = (model.grad(theta + h * v, X, y, c) - model.grad(theta - h * v, X, y, c)) / (2 * h)
    assert rel_err(model.hvp(theta, X, y, c, v), fd) <= RTOL_FD_HVP



@pytest.mark.parametrize("name, n_classes", [("logistic", 2), ("softmax", 3), ("mlp", 3)])
def test_per_sample_gradient_norms_equal_the_norms_of_the_per_sample_gradients(name, n_classes):
    rng = np.random.default_rng(3)
    model = build_model(name, 4, n_classes=n_classes, hidden=(5, 3))
    X, y = rng.normal(size=(9, 4)), rng.integers(0, n_classes, 9)
    d = Problem(model, X, y).d
    at = model.at(rng.normal(size=d), X, y, np.full(9, 1 / 9))
    expected = np.linalg.norm(at.per_sample_grads(), axis=1)  # the (n, d) matrix, checked vs autograd
    assert rel_err(at.per_sample_grad_norms(), expected) < 1e-14


@pytest.mark.parametrize("signs", ["nonnegative", "mixed"])
def test_weighted_gram_is_the_gemm_product_and_exactly_symmetric(signs):
    """The Hessians' Aᵀ diag(w) A by a symmetric rank-n update (dsyrk on √w ⊙ A) equals the GEMM form
    to round-off; negative weights (possible in a user's c) take the GEMM path."""
    from refsam.models.base import weighted_gram

    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 40))
    w = rng.random(300) if signs == "nonnegative" else rng.standard_normal(300)
    expected = (A * w[:, None]).T @ A
    H = weighted_gram(A, w)
    np.testing.assert_array_equal(H, H.T)
    assert np.max(np.abs(H - expected)) <= 1e-13 * np.max(np.abs(expected))
