"""Applications: detection metrics against brute-force oracles, and every influence-based application
against retraining (replays of the recorded run with changed sample weights) or re-solved roots."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsam import SAM, SGD, LogisticRegression, Problem, apps, replay
from refsam.data.loaders import flip_labels, load_dataset
from refsam.influence.fixed_point import solve_fixed_point
from refsam.tolerances import FD_STEP, RTOL_CLOSED_FORM_FD, RTOL_REPLAY_VS_ROOT, RTOL_TRAJECTORY_FD

LINEAR_REGIME = 0.35  # removing k=3 of 60 points: the linear prediction is right to within ~35%


@pytest.fixture(scope="module")
def noisy_fit():
    """A converged full-batch SAM run on 60 points with 6 flipped labels, plus a validation set."""
    data = load_dataset("synthetic", n=90, seed=4)
    X, y = data.X[:60], data.y[:60]
    y_noisy, flipped = flip_labels(y, 2, 0.1, seed=1)
    problem = Problem(LogisticRegression(), X, y_noisy)
    fit_ = apps.fit(problem, SAM(0.05), SGD(0.5, weight_decay=0.05), steps=150, seed=0)
    return fit_, flipped, data.X[60:], data.y[60:]


# -- metrics ---------------------------------------------------------------------------------------------

def _auroc_brute_force(scores, flipped):
    """P(score of a flipped point > score of a clean one) + ½ P(tie), over all pairs."""
    pos, neg = scores[flipped], scores[~flipped]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


@settings(max_examples=15)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_equals_the_pairwise_probability_with_ties(pairs):
    scores = np.array([s for s, _ in pairs], dtype=float)  # few distinct values: many ties
    flipped = np.array([f for _, f in pairs])
    if flipped.all() or not flipped.any():
        with pytest.raises(ValueError, match="AUROC needs flipped and clean points"):
            apps.auroc(scores, flipped)
        return
    assert apps.auroc(scores, flipped) == pytest.approx(_auroc_brute_force(scores, flipped), abs=1e-12)


def test_auroc_and_recall_extremes():
    flipped = np.array([True, True, False, False, False, False, False, False, False, False])
    perfect = np.linspace(1, 0, 10)
    assert apps.auroc(perfect, flipped) == 1.0
    assert apps.auroc(-perfect, flipped) == 0.0
    assert apps.recall_at_fraction(perfect, flipped, 0.2) == 1.0
    assert apps.recall_at_fraction(perfect, flipped, 0.1) == 0.5
    assert apps.recall_at_fraction(-perfect, flipped, 0.5) == 0.0


@settings(max_examples=15)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0]))
def test_recall_equals_the_count_among_the_top_scores(seed, fraction):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(37)  # continuous: no ties
    flipped = rng.random(37) < 0.3
    flipped[0] = True
    k = int(np.ceil(fraction * 37))
    threshold = np.sort(scores)[::-1][k - 1]
    expected = np.sum(flipped & (scores >= threshold)) / flipped.sum()
    assert apps.recall_at_fraction(scores, flipped, fraction) == pytest.approx(expected)
    x, found = apps.detection_curve(scores, flipped)
    assert found[k] == pytest.approx(expected) and x[k] == pytest.approx(k / 37)
    assert found[0] == 0 and found[-1] == 1 and np.all(np.diff(found) >= 0)


def test_metric_inputs_are_validated():
    with pytest.raises(ValueError, match=r"`flipped` must have shape \(3,\)"):
        apps.auroc([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ValueError, match=r"`fraction` must lie in \(0, 1\]"):
        apps.recall_at_fraction([1.0, 2.0], [True, False], 0.0)
    with pytest.raises(ValueError, match="`flipped` marks no point"):
        apps.recall_at_fraction([1.0, 2.0], [False, False], 0.5)


# -- self-influence and detection ---------------------------------------------------------------------------

def _loss_j(problem, theta, j):
    return problem.model.losses(theta, problem.X[j:j + 1], problem.y[j:j + 1])[0]


def test_self_influence_matches_finite_differences_of_retraining_and_re_solving(noisy_fit):
    fit_, flipped, _, _ = noisy_fit
    problem = fit_.problem
    assert fit_.fixed_point.converged
    run_self = apps.fit_self_influence(fit_, "trajectory")
    root_self = apps.fit_self_influence(fit_, "closed_form")
    for j in (int(np.flatnonzero(flipped)[0]), 3):
        run_fd, root_fd = [], []
        for sign in (1.0, -1.0):
            w = np.ones(problem.n)
            w[j] += sign * FD_STEP
            run_fd.append(_loss_j(problem, replay(problem, fit_.trajectory, weights=w).theta_final, j))
            root = solve_fixed_point(problem, fit_.sam, fit_.theta_hat, optimizer=fit_.optimizer, weights=w,
                                     tol=1e-13).theta
            root_fd.append(_loss_j(problem, root, j))
        run_d = (run_fd[0] - run_fd[1]) / (2 * FD_STEP)
        root_d = (root_fd[0] - root_fd[1]) / (2 * FD_STEP)
        assert run_d < 0  # up-weighting a point lowers its own loss
        assert run_self[j] == pytest.approx(run_d, rel=RTOL_TRAJECTORY_FD)
        assert root_self[j] == pytest.approx(root_d, rel=RTOL_CLOSED_FORM_FD)


def test_detection_ranks_flipped_labels_far_above_chance(noisy_fit):
    fit_, flipped, _, _ = noisy_fit
    results = {r.method: r for r in apps.detect_mislabeled(fit_, flipped, ["closed_form", "trajectory"])}
    assert set(results) == {"closed_form", "trajectory", "loss", "random"}
    for method in ("closed_form", "trajectory", "loss"):
        assert np.ptp(results[method].scores) > 0  # not a constant ranking
        assert results[method].metrics["auroc"] > 0.8  # chance is 0.5
    assert results["closed_form"].metrics["top20%"] >= 0.5
    with pytest.raises(ValueError, match=r"`flipped` must have shape \(60,\)"):
        apps.detect_mislabeled(fit_, flipped[:5])


# -- removal and explanation against retraining --------------------------------------------------------

def test_removing_the_most_harmful_points_lowers_validation_loss_as_predicted(noisy_fit):
    fit_, _, X_val, y_val = noisy_fit
    results = apps.remove_harmful(fit_, X_val, y_val, k=3, methods=["closed_form", "trajectory"], n_random=3)
    by_method = {r.method: r for r in results if r.method != "random"}
    random_mean = np.mean([r.actual_change for r in results if r.method == "random"])
    for r in by_method.values():
        assert r.removed.size == 3
        assert r.predicted_change < 0 and r.actual_change < 0
        assert r.actual_change == pytest.approx(r.predicted_change, rel=LINEAR_REGIME)
        assert r.actual_change < random_mean
    # the actual change is an independent retraining: check it against a direct replay
    w = np.ones(fit_.problem.n)
    w[by_method["trajectory"].removed] = 0.0
    theta = replay(fit_.problem, fit_.trajectory, weights=w).theta_final
    f0 = apps.mean_loss(fit_.problem, fit_.theta_final, X_val, y_val)
    assert by_method["trajectory"].actual_change == pytest.approx(
        apps.mean_loss(fit_.problem, theta, X_val, y_val) - f0, rel=1e-12)
    with pytest.raises(ValueError, match="`k` must be < n=60"):
        apps.remove_harmful(fit_, X_val, y_val, k=60)


def test_removing_proponents_raises_and_removing_opponents_lowers_the_test_loss(noisy_fit):
    fit_, _, X_val, y_val = noisy_fit
    problem = fit_.problem
    x, y = X_val[0], int(y_val[0])
    expl = apps.explain_prediction(fit_, x, y, k=3, method="trajectory")
    assert np.all(expl.influence[expl.proponents] < 0) and np.all(expl.influence[expl.opponents] > 0)
    assert expl.influence[expl.proponents[0]] == expl.influence.min()

    def test_loss_without(removed):
        return problem.model.losses(apps.retrain_without(fit_, removed), x[None, :], np.array([y]))[0]

    base = problem.model.losses(fit_.theta_final, x[None, :], np.array([y]))[0]
    assert test_loss_without(expl.proponents) > base
    assert test_loss_without(expl.opponents) < base
    closed = apps.explain_prediction(fit_, x, y, k=3, method="closed_form")
    np.testing.assert_array_equal(np.sort(closed.proponents), np.sort(expl.proponents))  # converged run


def test_ground_truth_and_method_comparison_on_a_converged_run(noisy_fit):
    fit_, flipped, X_val, y_val = noisy_fit
    subset = apps.choose_subset(fit_.problem.n, 6, flipped, seed=0)
    assert flipped[subset].sum() == 3  # half of the subset is flipped points
    truth = apps.ground_truth(fit_, X_val, y_val, subset)
    # a stable run: retraining (150 steps from θ_0) and re-solving the root agree on leave-one-out up to
    # how far 150 steps get from θ_0 towards the new root
    assert apps.rel_err(truth.loo_root, truth.loo_run) < RTOL_REPLAY_VS_ROOT
    agreements = {a.method: a for a in apps.compare_methods(fit_, X_val, y_val, truth,
                                                            ["closed_form", "trajectory", "closed_form_erm"])}
    assert agreements["closed_form"].max_rel_err < RTOL_CLOSED_FORM_FD
    assert agreements["trajectory"].max_rel_err < RTOL_TRAJECTORY_FD
    # the ablation is measurably different
    assert agreements["closed_form_erm"].max_rel_err > 10 * RTOL_CLOSED_FORM_FD
    assert agreements["closed_form"].pearson > 0.99


def test_unknown_method_and_minibatch_runs_are_reported():
    data = load_dataset("synthetic", n=30, seed=0)
    problem = Problem(LogisticRegression(), data.X, data.y)
    fit_ = apps.fit(problem, SAM(0.05), SGD(0.5, weight_decay=0.05), steps=10, batch_size=10, seed=0)
    assert fit_.fixed_point is None and "minibatch" in fit_.fixed_point_note
    assert "closed_form" not in fit_.available_methods()
    with pytest.raises(ValueError, match="needs a verified SAM fixed point: minibatch run"):
        apps.influence(fit_, "closed_form", data.X, data.y)
    with pytest.raises(ValueError, match="`method` must be one of"):
        apps.influence(fit_, "koh-liang", data.X, data.y)


def test_a_run_without_a_sam_root_keeps_only_the_trajectory_methods():
    data = load_dataset("synthetic", n=30, seed=0)
    problem = Problem(LogisticRegression(), data.X, data.y, l2=0.01)  # 0.1's coupled mode
    fit_ = apps.fit(problem, SAM(0.05), SGD(0.5), steps=20, seed=0)
    assert fit_.fixed_point is None and "has no solution" in fit_.fixed_point_note
    assert fit_.available_methods() == apps.RUN_METHODS
    with pytest.raises(ValueError, match="needs a verified SAM fixed point: G"):
        apps.fit_self_influence(fit_, "closed_form_erm")


def test_the_0_1_method_spellings_name_the_same_methods(noisy_fit):
    """0.1's application names ("sam-full", "erm", "first-order", …) still select the method-table rows
    they named, with the same numbers; results carry the canonical name."""
    fit_, _, X_val, y_val = noisy_fit
    for old, new in (("sam-full", "closed_form"), ("sam-frozen", "closed_form_frozen"),
                     ("erm", "closed_form_erm"), ("first-order", "first_order"), ("adjoint", "trajectory")):
        np.testing.assert_array_equal(apps.influence(fit_, old, X_val, y_val),
                                      apps.influence(fit_, new, X_val, y_val))
    assert apps.explain_prediction(fit_, X_val[0], int(y_val[0]), method="sam-full").method == "closed_form"
