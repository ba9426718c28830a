"""docs/coming_from.md's conversions hold: on refsam's own outputs, against each library's quantity written
from its definition (Koh–Liang's I_up,loss = n·I_j; pyDVL, kronfluence −n·Iᵀ; dattri −n·I; captum −Iᵀ;
TracInCP −n·tracin_unperturbedᵀ; TRAK's margin and the loss through −(1 − p)), also for a SAM run's
`closed_form_erm`; and against the libraries themselves where they are installed (skipped otherwise:
none is a dependency of refsam)."""

import inspect

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import refsam
from refsam import apps
from refsam.tolerances import RTOL_CASE_EXACT, RTOL_SAME_FORMULA  # a float64 port; one formula, two solves


def _setup(rho=0.0, lam=0.05):
    X, y, _ = refsam.make_gaussian_classification(n=90, n_features=3, seed=3)
    problem = refsam.Problem(refsam.LogisticRegression(), X[:70], y[:70])
    sam = refsam.SAM(rho=rho)
    fit = apps.fit(problem, sam, refsam.SGD(0.5, weight_decay=lam), steps=300)
    assert fit.fixed_point is not None and fit.fixed_point.converged
    return problem, sam, fit, X[70:], y[70:], lam


def _koh_liang(problem, theta, X_test, y_test, lam):
    """I_up,loss(z_j, z_k) = −∇ℓ_kᵀ (∇²F + λI)⁻¹ ∇ℓ_j, the Hessian by autograd of the mean loss (an
    oracle independent of refsam's hand-written derivatives), (n_train, n_test)."""
    model = problem.model

    def mean_loss(t):
        return anp.mean(model.losses(t, problem.X, problem.y))

    H = autograd.hessian(mean_loss)(theta) + lam * np.eye(theta.size)
    per_sample = autograd.jacobian(lambda t, X, y: model.losses(t, X, y))
    g_train = per_sample(theta, problem.X, problem.y)  # (n, d)
    g_test = per_sample(theta, X_test, y_test)  # (m, d)
    return -(g_test @ np.linalg.solve(H, g_train.T)).T, H, g_train, g_test


def test_koh_liang_up_loss_is_n_times_refsams_influence_and_the_libraries_follow():
    problem, sam, fit, X_test, y_test, lam = _setup()
    I = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    n = problem.n
    up_loss, H, g_train, g_test = _koh_liang(problem, fit.fixed_point.theta, X_test, y_test, lam)
    assert np.abs(I).max() > 1e-6  # not trivially zero
    np.testing.assert_allclose(up_loss, n * I, rtol=RTOL_SAME_FORMULA, atol=0)
    inner = g_test @ np.linalg.solve(H, g_train.T)  # the libraries' ∇ℓ_kᵀ H⁻¹ ∇ℓ_j, (m, n)
    np.testing.assert_allclose(inner, -n * I.T, rtol=RTOL_SAME_FORMULA, atol=0)  # pyDVL, kronfluence
    np.testing.assert_allclose(inner.T, -n * I, rtol=RTOL_SAME_FORMULA, atol=0)  # dattri
    captum = g_test @ np.linalg.solve(n * H, g_train.T)  # Hessian of the summed loss
    np.testing.assert_allclose(captum, -I.T, rtol=RTOL_SAME_FORMULA, atol=0)


def test_removal_is_minus_refsams_influence_and_matches_leave_one_out():
    """The sign every library's "helpful" convention is converted through: −I_j predicts the change
    of the test loss when j is removed (re-solved root without j, as the page says)."""
    problem, sam, fit, X_test, y_test, _ = _setup()
    I = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    before = problem.model.losses(fit.fixed_point.theta, X_test, y_test)
    for j in (0, 1):
        weights = np.ones(problem.n)
        weights[j] = 0.0
        refit = apps.fit(problem.with_weights(weights), sam, fit.optimizer, steps=300)
        actual = problem.model.losses(refit.fixed_point.theta, X_test, y_test) - before
        predicted = -I[j]
        slope = predicted @ actual / (predicted @ predicted)  # 1 in sign and scale (not −1, not n)
        assert 0.8 < slope < 1.25 and np.corrcoef(predicted, actual)[0, 1] > 0.99


def test_for_a_sam_run_the_conversions_hold_for_closed_form_erm():
    problem, sam, fit, X_test, y_test, lam = _setup(rho=0.05)
    I_erm = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test, variant="erm")
    I_full = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    up_loss = _koh_liang(problem, fit.fixed_point.theta, X_test, y_test, lam)[0]
    np.testing.assert_allclose(up_loss, problem.n * I_erm, rtol=RTOL_SAME_FORMULA, atol=0)
    assert np.abs(I_full - I_erm).max() > 1e-3 * np.abs(I_full).max()  # the SAM terms are not nothing


def test_tracincp_over_every_step_is_minus_n_times_tracin_unperturbed():
    problem, sam, _, X_test, y_test, _ = _setup()
    traj = refsam.train(problem, sam, refsam.SGD(0.5, weight_decay=0.05), 40)
    tracin = refsam.trajectory_influence(problem, traj, X_test, y_test, method="tracin_unperturbed")
    grads = problem.model.per_sample_grads
    tracincp = sum(eta * grads(t, X_test, y_test) @ grads(t, problem.X, problem.y).T
                   for t, eta in zip(traj.thetas[:-1], traj.lrs))  # captum's (test, train)
    np.testing.assert_allclose(tracincp, -problem.n * tracin.T, rtol=RTOL_SAME_FORMULA, atol=0)


def test_trak_margin_influence_and_the_loss_influence_differ_by_minus_one_minus_p():
    problem, sam, fit, X_test, y_test, _ = _setup()
    theta = fit.fixed_point.theta
    I = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    d_theta = refsam.parameter_influence(problem, sam, fit.fixed_point)  # (n, d)
    margin = autograd.jacobian(lambda t: (2 * y_test - 1) * (X_test @ t[:-1] + t[-1]))(theta)  # (m, d)
    I_margin = d_theta @ margin.T  # I_j(m_k)
    p_correct = problem.model.predict_proba(theta, X_test)[np.arange(y_test.size), y_test]
    np.testing.assert_allclose(-(1 - p_correct) * I_margin, I, rtol=RTOL_SAME_FORMULA, atol=0)


# ----- the libraries themselves, where installed --------------------------------------------------

def _torch_logistic(theta, d):
    torch = pytest.importorskip("torch")
    linear = torch.nn.Linear(d, 1).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(theta[:-1]).reshape(1, d))  # refsam: bias last
        linear.bias.copy_(torch.tensor(theta[-1:]))
    return torch, torch.nn.Sequential(linear, torch.nn.Flatten(0))


def test_pydvl_direct_influence_is_minus_n_times_refsams_transposed():
    pytest.importorskip("pydvl.influence.torch")
    from pydvl.influence.torch import DirectInfluence

    problem, sam, fit, X_test, y_test, lam = _setup()
    I = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    torch, model = _torch_logistic(fit.fixed_point.theta, problem.p)
    loss = torch.nn.functional.binary_cross_entropy_with_logits  # the mean over the batch
    params = inspect.signature(DirectInfluence).parameters
    damping = {"regularization": lam} if "regularization" in params else {"hessian_regularization": lam}
    X, y = torch.tensor(problem.X), torch.tensor(problem.y, dtype=torch.float64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=problem.n)
    scores = DirectInfluence(model, loss, **damping).fit(loader).influences(
        torch.tensor(X_test), torch.tensor(y_test, dtype=torch.float64), X, y)
    np.testing.assert_allclose(scores.detach().numpy(), -problem.n * I.T, rtol=RTOL_CASE_EXACT, atol=0)


def test_captum_naive_influence_is_minus_refsams_transposed(tmp_path):
    pytest.importorskip("captum.influence")
    from captum.influence import NaiveInfluenceFunction

    problem, sam, fit, X_test, y_test, lam = _setup()
    I = refsam.hessian_influence(problem, sam, fit.fixed_point, X_test, y_test)
    torch, model = _torch_logistic(fit.fixed_point.theta, problem.p)
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    train = torch.utils.data.TensorDataset(torch.tensor(problem.X),
                                           torch.tensor(problem.y, dtype=torch.float64))
    influence = NaiveInfluenceFunction(
        model, train, str(checkpoint), loss_fn=torch.nn.BCEWithLogitsLoss(reduction="none"),
        batch_size=problem.n, hessian_reg=problem.n * lam, projection_dim=problem.d,
        hessian_inverse_tol=0.0)
    scores = influence.influence((torch.tensor(X_test), torch.tensor(y_test, dtype=torch.float64)))
    np.testing.assert_allclose(scores.detach().numpy(), -I.T, rtol=RTOL_CASE_EXACT, atol=0)
