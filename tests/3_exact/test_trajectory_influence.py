"""Trajectory influence (contract §4, §5): the exact methods agree with each other and with retraining.

Oracle ladder: adjoint = forward = autograd through the whole training loop (≤ 1e-9) on hypothesis-
generated runs; = central finite differences of replaying the run (≤ 1e-5), also in the coupled
2-cycle regime; → the closed form of a converged, stable full-batch run as T grows; leave-one-out
replays for the approximations.
"""

import sys

import numpy as np
import pytest
from autograd import grad as ag_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam.ground_truth.replay import finite_difference_replay, leave_one_out_replay
from refsam.influence.fixed_point import solve_fixed_point
from refsam.influence.linearisation import residual_map
from refsam.influence.methods import TRAJECTORY_APPROXIMATIONS as APPROXIMATE_METHODS
from refsam.influence.methods import TRAJECTORY_METHODS
from refsam.influence.trajectory import (
    trajectory_influence,
    trajectory_parameter_influence,
    trajectory_self_influence,
)
from refsam.kit.testing import influence_problems, rel_err, trajectories
from refsam.tolerances import (
    RTOL_EXACT_METHODS,
    RTOL_REORDERED,
    RTOL_TRAJECTORY_FD,
    RTOL_TRAJECTORY_TO_CLOSED_FORM,
)

FD_STEP = 1e-4


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def penalised(model, X, y, lam, regularization="decoupled", weights=None):
    """(problem, weight decay): 0.1's "coupled" λ is the loss's l2, its "decoupled" λ the optimizer's
    weight decay (pass it to refsam.SGD)."""
    if regularization == "coupled":
        return refsam.Problem(model, X, y, weights, l2=lam), 0.0
    return refsam.Problem(model, X, y, weights), lam


def assert_not_trivial(values):
    """Guard: the influence must be neither all zero nor constant across training points."""
    values = np.asarray(values)
    assert np.max(np.abs(values)) > 1e-8
    assert np.ptp(values, axis=0).max() > 1e-8


# -- strategies -------------------------------------------------------------------------------------

MODELS = {
    "logistic": lambda p: (refsam.LogisticRegression(), 2),
    "softmax": lambda p: (refsam.SoftmaxRegression(3), 3),
    "mlp": lambda p: (refsam.MLP((p, 3, 2), activation="tanh"), 2),
}


@st.composite
def recorded_runs(draw, model_name=None, rule=None, regularization=None, minibatch=None, max_steps=8):
    """A tiny recorded SAM run: (problem, trajectory, X_test, y_test).

    Arguments left as None are drawn. Draws cover constant and per-step learning rates, non-unit sample
    weights, ρ in {0.05, 0.2}; a minibatch run uses a batch size that does not divide n, so the last
    batch of every epoch is smaller. Gaussian data keep every draw non-degenerate; sizes stay tiny
    (n ≤ 14, d ≤ 15, T ≤ 8) so the autograd oracle is quick.
    """
    model_name = draw(st.sampled_from(sorted(MODELS))) if model_name is None else model_name
    rule = draw(st.sampled_from(["sam", "usam", "asam"])) if rule is None else rule
    if regularization is None:
        regularization = draw(st.sampled_from(["decoupled", "coupled"]))
    minibatch = draw(st.booleans()) if minibatch is None else minibatch
    n = draw(st.integers(8, 14))
    p = draw(st.integers(2, 3))
    model, n_classes = MODELS[model_name](p)
    seed = draw(st.integers(0, 2**16))
    X, y, _ = refsam.make_gaussian_classification(n=n + 3, n_features=p, n_classes=n_classes,
                                                  separation=1.0, seed=seed)
    weights = np.random.default_rng(seed).uniform(0.5, 1.5, size=n) if draw(st.booleans()) else None
    problem, weight_decay = penalised(model, X[:n], y[:n], draw(st.sampled_from([0.0, 0.01, 0.1])),
                                      regularization, weights)
    sam = refsam.SAM(draw(st.sampled_from([0.05, 0.2])), rule)
    steps = draw(st.integers(3, max_steps))
    lr = draw(st.one_of(st.floats(0.05, 0.5),
                        st.lists(st.floats(0.05, 0.5), min_size=steps, max_size=steps).map(np.array)))
    batch_size = draw(st.integers(3, n - 1).filter(lambda b: n % b != 0)) if minibatch else None
    trajectory = refsam.train(problem, sam, refsam.SGD(lr, weight_decay=weight_decay), steps,
                              batch_size=batch_size, seed=seed)
    return problem, trajectory, X[n:], y[n:]


# -- exact methods agree ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
@pytest.mark.parametrize("minibatch", [False, True], ids=["full", "minibatch"])
@settings(max_examples=2)
@given(data=st.data())
def test_adjoint_equals_forward_equals_autodiff(model_name, rule, regularization, minibatch, data):
    """Every model × rule × mode × batching; hypothesis draws sizes, λ, ρ, weights and η schedules."""
    run = data.draw(recorded_runs(model_name, rule, regularization, minibatch))
    problem, trajectory, X_test, y_test = run
    autodiff = trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")
    adjoint = trajectory_influence(problem, trajectory, X_test, y_test, method="adjoint")
    forward = trajectory_influence(problem, trajectory, X_test, y_test, method="forward")
    assert adjoint.shape == (problem.n, len(y_test))
    assert_not_trivial(autodiff)
    assert rel_err(adjoint, autodiff) <= RTOL_EXACT_METHODS
    assert rel_err(forward, autodiff) <= RTOL_EXACT_METHODS


def test_rho_zero_is_exact_for_plain_sgd():
    """ρ = 0 (plain SGD): P_t = 0, the recursions reduce to SGD's; still = autodiff."""
    problem, trajectory, X_test, y_test = _logistic_run(rho=0.0, batch_size=5)
    autodiff = trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")
    assert_not_trivial(autodiff)
    assert rel_err(trajectory_influence(problem, trajectory, X_test, y_test), autodiff) <= RTOL_EXACT_METHODS


@settings(max_examples=10)
@given(case=influence_problems(trajectories(min_steps=2, max_steps=6, max_lr=0.5)))
def test_exact_methods_agree_on_refsam_testing_runs(case):
    """The same claim on refsam.testing's broader (and more degenerate) draws: any p, widths, weights in
    {0} ∪ [1e-100, 2], ρ and κ ranges, batch sizes 1..n."""
    args = (case.problem, case.trajectory, case.X_test, case.y_test)
    autodiff = trajectory_influence(*args, method="autodiff")
    assert rel_err(trajectory_influence(*args, method="adjoint"), autodiff) <= RTOL_EXACT_METHODS
    assert rel_err(trajectory_influence(*args, method="forward"), autodiff) <= RTOL_EXACT_METHODS


@settings(max_examples=6)
@given(run=recorded_runs(max_steps=5))
def test_parameter_target_equals_autodiff_jacobian(run):
    problem, trajectory, _, _ = run
    autodiff = trajectory_parameter_influence(problem, trajectory, method="autodiff")  # (n, d)
    assert autodiff.shape == (problem.n, problem.d)
    assert_not_trivial(autodiff)
    for method in ("adjoint", "forward"):
        got = trajectory_parameter_influence(problem, trajectory, method=method)
        assert rel_err(got, autodiff) <= RTOL_EXACT_METHODS, method


def _logistic_run(rule="sam", regularization="decoupled", batch_size=None, steps=12, n=12, rho=0.1,
                  weight_decay=0.05, lr=0.4, seed=3, p=3):
    X, y, _ = refsam.make_gaussian_classification(n=n + 4, n_features=p, seed=seed)
    problem, decay = penalised(refsam.LogisticRegression(), X[:n], y[:n], weight_decay, regularization)
    trajectory = refsam.train(problem, refsam.SAM(rho, rule), refsam.SGD(lr, weight_decay=decay), steps,
                              batch_size=batch_size, seed=seed)
    return problem, trajectory, X[n:], y[n:]


@pytest.mark.parametrize("rule", ["sam", "usam", "asam"])
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
def test_adjoint_equals_replay_finite_differences(rule, regularization):
    problem, trajectory, X_test, y_test = _logistic_run(rule, regularization, batch_size=5)
    adjoint = trajectory_influence(problem, trajectory, X_test, y_test)
    fd = finite_difference_replay(problem, trajectory, X_test, y_test, h=FD_STEP)
    assert_not_trivial(fd)
    assert rel_err(adjoint, fd) <= RTOL_TRAJECTORY_FD


def test_exact_in_the_coupled_two_cycle_regime():
    """Coupled SAM, full batch, strictly convex F + r: no fixed point, the run ends in a 2-cycle —
    and the trajectory influence is still the exact derivative of that run."""
    problem, trajectory, X_test, y_test = _logistic_run("sam", "coupled", steps=400, n=16, rho=0.1,
                                                        weight_decay=0.1, lr=0.5)
    thetas = trajectory.thetas
    two_step = np.linalg.norm(thetas[-1] - thetas[-3])
    one_step = np.linalg.norm(thetas[-1] - thetas[-2])
    assert one_step > 1e-2 and two_step < 1e-12, (one_step, two_step)  # θ_T = θ_{T−2} ≠ θ_{T−1}
    adjoint = trajectory_influence(problem, trajectory, X_test, y_test)
    fd = finite_difference_replay(problem, trajectory, X_test, y_test, h=FD_STEP)
    assert_not_trivial(fd)
    assert rel_err(adjoint, fd) <= RTOL_TRAJECTORY_FD


def test_derivative_is_taken_at_the_recorded_weights():
    """A run recorded with weights w⁰ ≠ 1 is differentiated at w⁰, whatever the problem's weights."""
    X, y, _ = refsam.make_gaussian_classification(n=14, n_features=3, seed=5)
    weights = np.linspace(0.5, 1.5, 12)
    weighted = refsam.Problem(refsam.LogisticRegression(), X[:12], y[:12], weights)
    trajectory = refsam.train(weighted, refsam.SAM(0.1), refsam.SGD(0.4, weight_decay=0.05), 6, batch_size=5)
    unit = weighted.with_weights(None)
    expected = trajectory_influence(weighted, trajectory, X[12:], y[12:], method="autodiff")
    assert rel_err(trajectory_influence(unit, trajectory, X[12:], y[12:]), expected) <= RTOL_EXACT_METHODS
    fd = finite_difference_replay(unit, trajectory, X[12:], y[12:])
    assert rel_err(fd, expected) <= RTOL_TRAJECTORY_FD


def test_a_saved_and_loaded_trajectory_gives_the_same_influence(tmp_path):
    problem, trajectory, X_test, y_test = _logistic_run("asam", "coupled", batch_size=5)
    trajectory.save(tmp_path / "run.npz")
    loaded = refsam.Trajectory.load(tmp_path / "run.npz")
    np.testing.assert_array_equal(trajectory_influence(problem, loaded, X_test, y_test),
                                  trajectory_influence(problem, trajectory, X_test, y_test))


def test_blocked_mlp_tangents_give_the_same_result(monkeypatch):
    """Many directions (n tangents, many test functions) are processed in column blocks to bound memory;
    a tiny block budget (one direction per pass) must not change any result."""
    X, y, _ = refsam.make_gaussian_classification(n=14, n_features=3, n_classes=3, seed=1)
    problem = refsam.Problem(refsam.MLP((3, 5, 3)), X[:12], y[:12])
    trajectory = refsam.train(problem, refsam.SAM(0.1, "asam"), refsam.SGD(0.3, weight_decay=0.01), 6,
                              batch_size=5)
    methods = ("adjoint", "forward", "first_order")
    whole = {m: trajectory_influence(problem, trajectory, X, y, method=m) for m in methods}
    monkeypatch.setattr(sys.modules["refsam.models.mlp"], "BLOCK_FLOATS", 1)
    for method in methods:
        assert rel_err(trajectory_influence(problem, trajectory, X, y, method=method), whole[method]) <= 1e-14


# -- approximations ---------------------------------------------------------------------------------

def test_approximations_match_an_independent_autograd_sum():
    """first_order / tracin (perturbed and unperturbed) = −Σ_t η_t/|B_t| ∇ℓ_j(x_t)ᵀ ∇f(y_t) computed
    here with autograd per training point, no batching tricks."""
    X, y, _ = refsam.make_gaussian_classification(n=13, n_features=3, n_classes=3, seed=2)
    problem = refsam.Problem(refsam.MLP((3, 4, 3)), X[:10], y[:10])
    trajectory = refsam.train(problem, refsam.SAM(0.1, "asam"), refsam.SGD(0.3, weight_decay=0.01), 5,
                              batch_size=4, seed=1)
    X_test, y_test = X[10:], y[10:]

    def loss_grad(theta, x, label):
        return ag_grad(lambda t: problem.model.losses(t, x[None], np.array([label]))[0])(theta)

    for method in APPROXIMATE_METHODS:
        perturbed = not method.endswith("unperturbed")
        expected = np.zeros((problem.n, len(y_test)))
        for t, idx in enumerate(trajectory.batches):
            x_t = trajectory.w_hat[t] if perturbed else trajectory.thetas[t]
            test_point = x_t if method.startswith("tracin") else trajectory.theta_final
            for j in idx:
                for k in range(len(y_test)):
                    test_grad = loss_grad(test_point, X_test[k], y_test[k])
                    expected[j, k] -= trajectory.lrs[t] / len(idx) * loss_grad(x_t, X[j], y[j]) @ test_grad
        got = trajectory_influence(problem, trajectory, X_test, y_test, method=method)
        assert_not_trivial(got)
        assert rel_err(got, expected) <= RTOL_EXACT_METHODS, method


def test_first_order_is_exact_for_one_plain_gradient_step():
    """T = 1 and ρ = 0: A_0 never acts and the inner term vanishes, so first_order = exact."""
    problem, trajectory, X_test, y_test = _logistic_run(rho=0.0, steps=1)
    exact = trajectory_influence(problem, trajectory, X_test, y_test, method="autodiff")
    for method in ("first_order", "first_order_unperturbed"):
        got = trajectory_influence(problem, trajectory, X_test, y_test, method=method)
        assert rel_err(got, exact) <= RTOL_EXACT_METHODS, method


def test_leave_one_out_spearman_of_each_method(record_property):
    """Exact trajectory influence ranks the actual leave-one-out changes of a small smooth problem;
    the approximations' Spearman correlations are recorded (docs/trajectory.md has the full table)."""
    problem, trajectory, X_test, y_test = _logistic_run("sam", "decoupled", batch_size=10, steps=60, n=40,
                                                        rho=0.05, weight_decay=0.01, lr=0.3, p=4, seed=7)
    actual = leave_one_out_replay(problem, trajectory, X_test, y_test).mean(axis=1)  # mean test loss
    correlations = {}
    for method in ("adjoint",) + APPROXIMATE_METHODS:
        predicted = -trajectory_influence(problem, trajectory, X_test, y_test, method=method).mean(axis=1)
        correlations[method] = spearman(predicted, actual)
        record_property(f"spearman_{method}", correlations[method])
    print("leave-one-out Spearman:", {k: round(v, 4) for k, v in correlations.items()})
    assert_not_trivial(actual[:, None])
    assert correlations["adjoint"] >= 0.95
    assert all(c > 0 for c in correlations.values())  # every approximation at least points the right way


# -- the closed form as T grows ---------------------------------------------------------------------

def test_converges_to_the_closed_form_of_a_stable_root():
    """Full batch, decoupled, a stable root: the trajectory derivative → the IFT derivative as T → ∞."""
    X, y, _ = refsam.make_gaussian_classification(n=24, n_features=3, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X[:20], y[:20])
    optimizer = refsam.SGD(0.5, weight_decay=0.05)  # 0.1's decoupled weight_decay=0.05
    sam = refsam.SAM(0.05)
    X_test, y_test = X[20:], y[20:]
    errors, residuals = [], []
    for steps in (25, 50, 100, 200, 400, 800):
        trajectory = refsam.train(problem, sam, optimizer, steps)
        root = solve_fixed_point(problem, sam, trajectory.theta_final, optimizer=trajectory.optimizer())
        assert root.spectral_radius < 1  # a stable root: full-batch SAM converges to it
        closed = refsam.hessian_influence(problem, sam, root.theta, X_test, y_test, optimizer=optimizer)
        errors.append(rel_err(trajectory_influence(problem, trajectory, X_test, y_test), closed))
        residuals.append(np.linalg.norm(residual_map(problem, sam, trajectory.theta_final,
                                                     optimizer=optimizer)))
    print("T = 25..800: rel. err", [f"{e:.1e}" for e in errors], "residual", [f"{r:.1e}" for r in residuals])
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert residuals[-1] <= 1e-10
    for err, residual in zip(errors, residuals):
        if residual <= 1e-10:
            assert err <= RTOL_TRAJECTORY_TO_CLOSED_FORM


# -- inputs ---------------------------------------------------------------------------------------------

def test_bad_inputs_raise_with_pinned_messages():
    problem, trajectory, X_test, y_test = _logistic_run(steps=3)
    other = refsam.Problem(problem.model, problem.X, problem.y, l2=0.5)  # the run's loss has no L2 term
    with pytest.raises(ValueError, match=r"`problem` does not match the trajectory: l2 0.5 != recorded 0.0"):
        trajectory_influence(other, trajectory, X_test, y_test)
    with pytest.raises(ValueError, match=r"`method` must be one of \['adjoint', 'forward', 'autodiff'"):
        trajectory_influence(problem, trajectory, X_test, y_test, method="newton")
    with pytest.raises(ValueError, match=r"`method` must be one of \['adjoint', 'forward', 'autodiff'\]"):
        trajectory_parameter_influence(problem, trajectory, method="tracin")
    with pytest.raises(ValueError, match=r"`X_test` must have shape \(m >= 1, 3\) like the training data"):
        trajectory_influence(problem, trajectory, X_test[:, :2], y_test)
    with pytest.raises(ValueError, match=r"`y_test` must have shape \(4,\)"):
        trajectory_influence(problem, trajectory, X_test, y_test[:2])
    with pytest.raises(ValueError, match=r"`trajectory` must be a refsam.Trajectory, got ndarray"):
        trajectory_influence(problem, trajectory.thetas, X_test, y_test)
    with pytest.raises(ValueError, match=r"`problem` must be a refsam.Problem, got str"):
        trajectory_influence("problem", trajectory, X_test, y_test)


# -- self-influence: the diagonal without the n × n matrix ---------------------------------------------

def _assert_self_influence_is_the_diagonal(problem, trajectory):
    """Every method: trajectory_self_influence = the diagonal of trajectory_influence on the training set
    (the same terms, summed per row instead of per matrix entry: ≤ RTOL_REORDERED)."""
    for method in TRAJECTORY_METHODS:
        full = trajectory_influence(problem, trajectory, problem.X, problem.y, method, progress=False)
        own = trajectory_self_influence(problem, trajectory, method, progress=False)
        assert own.shape == (problem.n,)
        assert_not_trivial(own[:, None])
        assert rel_err(own, np.diag(full)) <= RTOL_REORDERED, method


@settings(max_examples=6)
@given(run=recorded_runs())
def test_self_influence_is_the_diagonal_of_the_influence_on_the_training_set(run):
    """Hypothesis draws models, rules, modes, batching, weights and η schedules."""
    _assert_self_influence_is_the_diagonal(*run[:2])


@pytest.mark.parametrize("setting", ["momentum", "m_sharpness", "rows_drawn_twice"])
def test_self_influence_is_the_diagonal_where_rows_and_steps_combine(setting):
    """The cases the row-wise sum must get right: momentum (a step's weight in θ_T, `step_weights`),
    m-sharpness (each chunk its own ŵ_C, so TracIn's test gradient differs per chunk) and a batch that
    holds a row twice (its terms add)."""
    X, y, _ = refsam.make_gaussian_classification(n=12, n_features=3, n_classes=3, separation=1.0, seed=1)
    problem = refsam.Problem(refsam.MLP((3, 4, 3), activation="tanh"), X, y)
    optimizer = refsam.SGD(0.2, momentum=0.9 if setting == "momentum" else 0.0, weight_decay=0.01)
    sam = refsam.SAM(0.1, m_sharpness=3 if setting == "m_sharpness" else None)
    if setting == "rows_drawn_twice":
        batches = [np.array([0, 1, 1, 2, 5]), np.array([3, 3, 3, 7]), np.arange(12), np.array([4, 8, 8])]
        trajectory = refsam.train(problem, sam, optimizer, batches=batches, progress=False)
    else:
        trajectory = refsam.train(problem, sam, optimizer, 5, batch_size=6, progress=False)
    _assert_self_influence_is_the_diagonal(problem, trajectory)


def test_hyphenated_method_names_and_progress(capsys):
    problem, trajectory, X_test, y_test = _logistic_run(steps=10)
    a = trajectory_influence(problem, trajectory, X_test, y_test, method="first-order")
    b = trajectory_influence(problem, trajectory, X_test, y_test, method="first_order")
    np.testing.assert_array_equal(a, b)
    trajectory_influence(problem, trajectory, X_test, y_test, progress=True)
    assert "adjoint: step 10/10" in capsys.readouterr().err


def test_a_batch_drawn_with_replacement_counts_a_repeated_point_each_time():
    """An external schedule may repeat a point within a batch (sampling with replacement): each copy
    contributes (the scatter-add falls back to np.add.at), as autodiff through the run says."""
    X, y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    run = refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.05),
                       batches=[[0, 0, 1, 2], [3, 3, 3, 4], [5, 6, 7, 8]])
    autodiff = trajectory_influence(problem, run, X[:2], y[:2], method="autodiff")
    assert np.abs(autodiff[3]).max() > 3 * np.abs(autodiff[4]).max() > 0  # three copies of point 3
    for method in ("adjoint", "forward"):
        assert rel_err(trajectory_influence(problem, run, X[:2], y[:2], method=method), autodiff) \
            <= RTOL_EXACT_METHODS


@pytest.mark.parametrize("rule, norm_eps", [("sam", 0.0), ("sam", 1e-3), ("usam", 0.0)])
@pytest.mark.parametrize("regularization", ["decoupled", "coupled"])
@pytest.mark.parametrize("scale", [1.0, 2.0**-600, 2.0**600], ids=["unit", "tiny", "huge"])
def test_the_gradient_rebuilt_from_the_run_equals_the_recomputed_one(rule, norm_eps, regularization, scale):
    """g_t = (ε_t/ρ)(‖g_t‖ + e) (SAM) or ε_t/ρ (USAM) against ∇F_t(θ_t) + λ_in θ_t, at every step, to a
    few eps of ‖g_t‖ — also where g·g underflows or overflows (g scaled by 2^±600: the rule's ε is
    invariant to the scale of g, so the scaled g stands for a loss of that scale)."""
    import scipy.linalg

    from refsam.influence.trajectory import _stored_gradient

    X, y, _ = refsam.make_gaussian_classification(30, 3, 2, seed=1)
    problem, decay = penalised(refsam.LogisticRegression(), X, y, 0.01, regularization)
    sam = refsam.SAM(0.1, rule, norm_eps=norm_eps * scale)
    run = refsam.train(problem, sam, refsam.SGD(0.5, weight_decay=decay), 6, batch_size=10, seed=0)
    lam_in = problem.l2  # what the perturbation sees: the loss's L2, never the optimizer's decay
    for t in range(run.steps):
        g = scale * (problem.grad(run.thetas[t], run.batches[t]) + lam_in * run.thetas[t])
        at_t = np.arange(run.steps) == t
        trial = refsam.Trajectory(run.thetas, np.where(at_t[:, None], sam.perturbation(run.thetas[t], g),
                                                       run.epsilons),
                                  run.batches, run.lrs, run.weights, run.config,
                                  grad_norms=np.where(at_t, scipy.linalg.norm(g), run.grad_norms))
        rebuilt = _stored_gradient(trial, sam, t)
        assert rebuilt is not None
        assert np.max(np.abs(rebuilt - g)) <= 4 * np.finfo(float).eps * scipy.linalg.norm(g)


def test_asam_rho_zero_and_unrecorded_norms_recompute_the_gradient():
    from refsam.influence.trajectory import _stored_gradient

    X, y, _ = refsam.make_gaussian_classification(20, 3, 2, seed=0)
    problem, optimizer = refsam.Problem(refsam.LogisticRegression(), X, y), refsam.SGD(0.5, weight_decay=0.01)
    for sam in (refsam.SAM(0.1, "asam"), refsam.SAM(0.0)):
        assert _stored_gradient(refsam.train(problem, sam, optimizer, 2), sam, 0) is None
    run = refsam.train(problem, refsam.SAM(0.1), optimizer, 2)
    assert _stored_gradient(run, refsam.SAM(0.1), 0) is not None
    bare = refsam.Trajectory(run.thetas, run.epsilons, run.batches, run.lrs, run.weights, run.config)
    assert _stored_gradient(bare, refsam.SAM(0.1), 0) is None


@pytest.mark.parametrize("model_name", ["logistic", "mlp"])
def test_the_adjoint_takes_no_gradient_at_theta_t_when_the_run_stored_its_norms(model_name, monkeypatch):
    """The saving is real: with ‖g_t‖ stored, a SAM adjoint computes no batch gradient at all (the
    gradients at θ_t were the only ones it took), and gives the influence of the recomputing path."""
    if model_name == "logistic":
        X, y, _ = refsam.make_gaussian_classification(40, 4, 2, seed=2)
        problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    else:
        X, y, _ = refsam.make_gaussian_classification(40, 4, 3, seed=2)
        problem = refsam.Problem(refsam.MLP((4, 6, 3)), X, y)
    run = refsam.train(problem, refsam.SAM(0.1), refsam.SGD(0.3, weight_decay=0.01), 8, batch_size=10,
                       seed=0)
    bare = refsam.Trajectory(run.thetas, run.epsilons, run.batches, run.lrs, run.weights, run.config)
    run.verify(problem), bare.verify(problem)  # the replay check (remembered) takes its own gradients
    derivatives_type = type(problem.at(run.theta0))
    calls = []
    original = derivatives_type.grad
    monkeypatch.setattr(derivatives_type, "grad", lambda self: calls.append(1) or original(self))
    stored = refsam.trajectory_influence(problem, run, X[:2], y[:2])
    # TODO(lead): fails on 0.2 — building each step's SAMStep (training.step.perturbations, line ~95)
    # computes the batch gradient at ŵ_t (the descent g̃_t) eagerly, one per step (8 here), which the
    # adjoint never uses for SGD (its VJP is linear in g̃); 0.1's adjoint took no batch gradient at all.
    assert calls == []
    recomputed = refsam.trajectory_influence(problem, bare, X[:2], y[:2])
    assert len(calls) == run.steps
    np.testing.assert_allclose(stored, recomputed, rtol=1e-11, atol=1e-14 * np.abs(recomputed).max())
