"""Models and the weighted objective (contract §1, §5.1): every hand-written derivative equals autograd.

Oracles: autograd applied to the models' per-sample losses (``Model``'s default derivatives, which
never call the hand-written code), a Python loop over samples for the weighted objective, and
closed-form asymptotics of the logistic loss.
"""

import subprocess
import sys
import textwrap

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam.kit.testing import problems, rel_err
from refsam.models import AutogradDerivatives, model_from_spec
from refsam.tolerances import RTOL_DERIVATIVE, RTOL_REORDERED


def autograd_per_sample_grads(model, theta, X, y):
    """Oracle: the Jacobian of the per-sample losses, (n, d), by autograd."""
    return AutogradDerivatives(model, theta, X, y).per_sample_grads()


def autograd_hessian(model, theta, X, y, c):
    """Oracle: ∇² Σ_i c_i ℓ_i(θ) by autograd, (d, d)."""
    return AutogradDerivatives(model, theta, X, y, c).hessian()


def autograd_hvp(model, theta, X, y, c, v):
    """Oracle: (∇² Σ_i c_i ℓ_i(θ)) v by forward-over-reverse autograd, (d,)."""
    return AutogradDerivatives(model, theta, X, y, c).hvp(v)


def random_case(model, n, p, seed, theta_scale=1.0):
    """Data, a generic θ, coefficients c (like w_i/|B|, not all equal) and a direction v."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = rng.integers(0, model.n_classes, size=n)
    theta = theta_scale * rng.standard_normal(model.n_params(p))
    c = rng.uniform(0.0, 2.0, size=n) / n
    v = rng.standard_normal(theta.shape[0])
    return X, y, theta, c, v


# -- logistic and softmax regression: gradient, per-sample gradients, Hessian, HVP = autograd ------

@pytest.mark.parametrize("model", [refsam.LogisticRegression(), refsam.SoftmaxRegression(2),
                                   refsam.SoftmaxRegression(4)], ids=repr)
@pytest.mark.parametrize("seed", [0, 1])
def test_analytic_derivatives_equal_autograd(model, seed):
    X, y, theta, c, v = random_case(model, n=13, p=3, seed=seed, theta_scale=2.0)
    G_auto = autograd_per_sample_grads(model, theta, X, y)
    H_auto = autograd_hessian(model, theta, X, y, c)
    assert np.abs(G_auto).max() > 1e-3 and np.abs(H_auto).max() > 1e-3  # not trivially zero

    assert rel_err(model.per_sample_grads(theta, X, y), G_auto) <= RTOL_DERIVATIVE
    assert rel_err(model.grad(theta, X, y, c), c @ G_auto) <= RTOL_DERIVATIVE
    assert rel_err(model.hessian(theta, X, y, c), H_auto) <= RTOL_DERIVATIVE
    assert rel_err(model.hvp(theta, X, y, c, v), autograd_hvp(model, theta, X, y, c, v)) <= RTOL_DERIVATIVE


@settings(max_examples=15)
@given(problems(kinds=("logistic", "softmax")), st.integers(0, 2**16))
def test_objective_derivatives_equal_autograd_of_objective(problem, seed):
    """∇F_{B,w}, ∇²F_{B,w}, ∇²F_{B,w} v of Problem = autograd of Problem.objective, on random batches."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(problem.d)
    v = rng.standard_normal(problem.d)
    idx = np.sort(rng.choice(problem.n, size=rng.integers(1, problem.n + 1), replace=False))
    for batch in (None, idx):
        rows = slice(None) if batch is None else batch
        grad_auto = autograd.grad(lambda t, b=batch: problem.objective(t, b))(theta)
        hess_auto = autograd.hessian(lambda t, b=batch: problem.objective(t, b))(theta)
        G_auto = autograd_per_sample_grads(problem.model, theta, problem.X[rows], problem.y[rows])
        assert np.allclose(problem.grad(theta, batch), grad_auto, rtol=RTOL_DERIVATIVE, atol=1e-15)
        assert np.allclose(problem.hessian(theta, batch), hess_auto, rtol=RTOL_DERIVATIVE, atol=1e-15)
        assert np.allclose(problem.hvp(theta, v, batch), hess_auto @ v, rtol=RTOL_DERIVATIVE, atol=1e-14)
        assert np.allclose(problem.per_sample_grads(theta, batch), G_auto, rtol=RTOL_DERIVATIVE, atol=1e-15)


def test_softmax_hessian_annihilates_class_shifts():
    """Adding the same vector to every class's column leaves the loss unchanged: H (a ⊗ 1) = 0."""
    model = refsam.SoftmaxRegression(3)
    X, y, theta, c, _ = random_case(model, n=10, p=2, seed=3)
    shift = np.kron(np.array([0.3, -1.0, 2.0]), np.ones(3))  # Θ[a, k] += a-th entry, every k
    H = model.hessian(theta, X, y, c)
    assert np.abs(H).max() > 1e-2
    assert np.abs(H @ shift).max() <= 1e-14 * np.abs(H).max() * np.abs(shift).max() * H.shape[0]


# -- MLP: hand backpropagation = autograd ------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "softplus", "sigmoid"])
@pytest.mark.parametrize("hidden", [(4,), (3, 5), (4, 3, 2)], ids=lambda h: f"depth{len(h)}")
def test_mlp_per_sample_grads_equal_autograd(activation, hidden):
    model = refsam.MLP((3, *hidden, 3), activation=activation)
    X, y, _, c, _ = random_case(model, n=9, p=3, seed=len(hidden))
    theta = model.init_params(3, seed=7) + 0.1  # non-zero biases exercise the bias rows
    G_auto = autograd_per_sample_grads(model, theta, X, y)
    assert np.abs(G_auto).max() > 1e-3
    assert rel_err(model.per_sample_grads(theta, X, y), G_auto) <= RTOL_DERIVATIVE
    assert rel_err(model.grad(theta, X, y, c), c @ G_auto) <= RTOL_DERIVATIVE


def test_mlp_parameter_layout_matches_the_docstring():
    """θ = [W_1.ravel(), b_1, W_2.ravel(), b_2]: the logits written out by hand from that layout."""
    model = refsam.MLP((2, 3, 2), activation="tanh")
    theta = np.arange(model.n_params(2), dtype=float) / 10.0
    W1, b1 = theta[:6].reshape(2, 3), theta[6:9]
    W2, b2 = theta[9:15].reshape(3, 2), theta[15:17]
    X = np.array([[0.5, -1.0], [2.0, 0.25]])
    expected = np.tanh(X @ W1 + b1) @ W2 + b2
    assert model.n_params(2) == 17
    assert np.allclose(model.logits(theta, X), expected, rtol=1e-15, atol=0)


# -- the weighted objective F_{B,w} --------------------------------------------------------------------

@settings(max_examples=15)
@given(problems(weighted=True), st.integers(0, 2**16))
def test_objective_is_the_weighted_batch_mean(problem, seed):
    """F_{B,w}(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ), with ℓ_i evaluated one sample at a time."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(problem.d)
    idx = np.sort(rng.choice(problem.n, size=rng.integers(1, problem.n + 1), replace=False))
    per_sample = [float(problem.model.losses(theta, problem.X[i:i + 1], problem.y[i:i + 1])[0])
                  for i in range(problem.n)]
    expected_full = sum(problem.weights[i] * per_sample[i] for i in range(problem.n)) / problem.n
    expected_batch = sum(problem.weights[i] * per_sample[i] for i in idx) / len(idx)
    assert np.isclose(problem.objective(theta), expected_full, rtol=1e-13, atol=1e-300)
    assert np.isclose(problem.objective(theta, idx), expected_batch, rtol=1e-13, atol=1e-300)


@settings(max_examples=15)
@given(problems(weighted=False), st.floats(0.1, 5.0), st.integers(0, 2**16))
def test_uniform_weights_scale_gradient_and_hessian(problem, c, seed):
    """w = c·1 multiplies F_B, ∇F_B, ∇²F_B and every per-batch HVP by c (metamorphic)."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(problem.d)
    v = rng.standard_normal(problem.d)
    scaled = problem.with_weights(np.full(problem.n, c))
    idx = np.sort(rng.choice(problem.n, size=rng.integers(1, problem.n + 1), replace=False))
    for batch in (None, idx):
        g = problem.grad(theta, batch)
        assert np.allclose(scaled.grad(theta, batch), c * g, rtol=RTOL_REORDERED, atol=1e-15 * c)
        assert np.allclose(scaled.hvp(theta, v, batch), c * problem.hvp(theta, v, batch),
                           rtol=RTOL_REORDERED, atol=1e-15 * c * np.abs(v).max())
        assert np.isclose(scaled.objective(theta, batch), c * problem.objective(theta, batch),
                          rtol=RTOL_REORDERED)
    H = problem.hessian(theta)
    assert np.allclose(scaled.hessian(theta), c * H, rtol=RTOL_REORDERED, atol=1e-15 * c)


def test_weights_override_and_zero_weight_removes_a_point():
    """Problem(weights=w) and objective(weights=w) agree; w_j = 0 is the problem without j."""
    X, y, _ = refsam.make_gaussian_classification(12, 3, seed=4)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    theta = np.linspace(-1, 1, problem.d)
    w = np.ones(12)
    w[5] = 0.0
    without_5 = refsam.Problem(refsam.LogisticRegression(), np.delete(X, 5, 0), np.delete(y, 5))
    assert problem.objective(theta, weights=w) == problem.with_weights(w).objective(theta)
    # (1/n) Σ_{i≠5} ℓ_i = (n−1)/n · F_without_5
    assert np.isclose(problem.with_weights(w).objective(theta), 11 / 12 * without_5.objective(theta),
                      rtol=1e-14)
    assert np.allclose(problem.grad(theta, weights=w), 11 / 12 * without_5.grad(theta), rtol=1e-13)


# -- numerical stability of the logistic loss -----------------------------------------------------------

def test_logistic_loss_is_stable_and_accurate_at_large_logits():
    """ℓ = log(1 + e^m), m = (1 − 2y) z: ≈ |z| when wrong, ≈ e^{−|z|} (full relative precision) when
    right; gradient (σ(z) − y) x̃ and curvature σ(z)σ(−z) keep the same precision and stay finite."""
    model = refsam.LogisticRegression()
    X = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    y = np.array([1, 0, 1, 0])
    for z in (40.0, 1000.0):
        theta = np.array([z, 0.0])  # logits ±z
        tiny = np.exp(-z)  # e^{−z}: 4.2e-18 at z = 40, underflows to 0 at z = 1000
        losses = model.losses(theta, X, y)
        # rows: (y=1, z), (y=0, z), (y=1, −z), (y=0, −z)
        assert np.allclose(losses, [tiny, z, z, tiny], rtol=1e-14, atol=0)
        residual = model.per_sample_grads(theta, X, y)[:, 1]  # the bias column: σ(z) − y
        assert np.allclose(residual, [-tiny, 1.0, -1.0, tiny], rtol=1e-14, atol=0)
        curvature = model.hessian(theta, X, y, np.ones(4))[1, 1]  # Σ σ(z)σ(−z)
        assert np.isclose(curvature, 4 * tiny / (1 + tiny) ** 2, rtol=1e-14, atol=0)
        auto = autograd.grad(lambda t: anp.sum(model.losses(t, X, y)))(theta)  # autograd stays finite too
        assert np.all(np.isfinite(auto)) and np.all(np.isfinite(losses))


def test_softmax_and_mlp_losses_are_finite_at_large_logits():
    model = refsam.SoftmaxRegression(3)
    X = np.array([[1.0], [-1.0]])
    y = np.array([0, 2])
    theta = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]).ravel()  # logits ±1000
    assert np.allclose(model.losses(theta, X, y), [0.0, 0.0], atol=0)
    assert np.allclose(model.losses(theta, X, y[::-1]), [2000.0, 2000.0], rtol=1e-15)
    assert np.all(np.isfinite(model.per_sample_grads(theta, X, y)))
    assert np.all(np.isfinite(model.hessian(theta, X, y, np.ones(2))))


# -- structure: initialisation, specs ------------------------------------------------------------------

@pytest.mark.parametrize("model", [refsam.LogisticRegression(), refsam.SoftmaxRegression(3),
                                   refsam.MLP((4, 5, 3), activation="softplus")], ids=repr)
def test_init_params_is_seeded_and_spec_round_trips(model):
    a, b, c = model.init_params(4, seed=0), model.init_params(4, seed=0), model.init_params(4, seed=1)
    assert a.shape == (model.n_params(4),) and a.dtype == np.float64
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    rebuilt = model_from_spec(model.spec())
    assert type(rebuilt) is type(model) and rebuilt.spec() == model.spec()
    X, y, theta, _, _ = random_case(model, n=5, p=4, seed=2)
    assert np.array_equal(rebuilt.losses(theta, X, y), model.losses(theta, X, y))


def test_predict_proba_rows_are_distributions_matching_the_loss():
    """ℓ_i = −log π_{i, y_i} for every model (the loss is the cross-entropy of predict_proba)."""
    for model in (refsam.LogisticRegression(), refsam.SoftmaxRegression(3), refsam.MLP((2, 3, 3))):
        X, y, theta, _, _ = random_case(model, n=6, p=2, seed=5)
        P = model.predict_proba(theta, X)
        assert np.allclose(P.sum(axis=1), 1.0, rtol=1e-15, atol=1e-15) and np.all(P > 0)
        assert np.allclose(model.losses(theta, X, y), -np.log(P[np.arange(6), y]), rtol=1e-12)


def test_refsam_imports_and_trains_without_hypothesis():
    """hypothesis is a test extra: `import refsam` must not pull in refsam.kit.testing, and
    refsam.kit.testing must say how to get hypothesis when it is missing."""
    script = textwrap.dedent("""
        import sys
        class BlockHypothesis:
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ImportError("No module named 'hypothesis' (blocked)")
        sys.meta_path.insert(0, BlockHypothesis())
        import refsam
        X, y, _ = refsam.make_gaussian_classification(20, 2, seed=0)
        refsam.train(refsam.Problem(refsam.LogisticRegression(), X, y), refsam.SAM(0.05),
                     refsam.SGD(0.5), 3)
        assert "refsam.kit.testing" not in sys.modules and "hypothesis" not in sys.modules
        try:
            import refsam.kit.testing
        except ImportError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # TODO(lead): refsam/kit/testing.py still names the deleted 0.1 module ("refsam.testing needs
    # hypothesis"); the message must name the module the user imported.
    assert 'refsam.kit.testing needs hypothesis; install the test extra: pip install "refsam[test]"' in (
        result.stdout)
