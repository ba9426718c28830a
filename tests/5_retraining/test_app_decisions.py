"""Decisions the CLI used to make itself, now in refsam.apps and tested here (issue 21: CLI modules only
parse, call and print): tuned-vs-grid verdict, an optimum on a bound, a diverged run, the first
misclassified point, and detection on data whose noise is unknown (rankings and scores.csv)."""

import csv

import numpy as np
import pytest

import refsam
from refsam import apps
from refsam.apps.tuning import GridResult, TuningResult

X, Y, _ = refsam.make_gaussian_classification(n=40, n_features=2, separation=1.0, seed=2)
PROBLEM = refsam.Problem(refsam.LogisticRegression(), X, Y)
SGD = refsam.SGD(0.5, weight_decay=0.01)


@pytest.fixture(scope="module")
def fit_():
    return apps.fit(PROBLEM, refsam.SAM(0.05), SGD, 150, seed=0)


def _grid(best_rho, best_lam, best_loss):
    rhos, lams = np.geomspace(1e-3, 1e-1, 3), np.geomspace(1e-4, 1.0, 3)  # steps log 10, log 100
    losses = np.full((3, 3), 1.0)
    losses[list(rhos).index(best_rho), list(lams).index(best_lam)] = best_loss
    return GridResult(rhos, lams, losses, 0.0)


def _tuned(rho, lam, loss, bounds=((1e-3, 0.1), (1e-4, 1.0))):
    return TuningResult(rho, lam, loss, (), "converged", 0.0, bounds)


def test_tuned_vs_grid_verdict_follows_the_grid_resolution_and_the_loss():
    grid = _grid(1e-2, 1e-2, 0.5)
    near = apps.compare_with_grid(_tuned(2e-2, 1e-2, 0.4), grid)  # |Δ log ρ| = log 2 < log 10
    assert near.within_resolution and near.at_or_below
    assert near.d_log_rho == pytest.approx(np.log(2)) and near.step_rho == pytest.approx(np.log(10))
    assert near.verdict() == "within the grid's resolution; the tuned f is at or below the grid's best"
    far = apps.compare_with_grid(_tuned(1e-2, 1e-2 * np.exp(5), 0.6), grid)  # |Δ log λ| = 5 > log 100
    assert not far.within_resolution and not far.at_or_below
    assert far.loss_difference == pytest.approx(0.1)
    assert far.verdict() == "NOT within the grid's resolution; the tuned f is ABOVE the grid's best"


def test_an_optimum_on_a_bound_is_named_and_an_interior_one_is_not():
    assert _tuned(0.05, 0.01, 0.3).bounds_hit() == []
    assert _tuned(0.1, 1e-4, 0.3).bounds_hit() == [("rho", "upper", 0.1), ("weight_decay", "lower", 1e-4)]
    result = apps.tune(PROBLEM, X[:10], Y[:10], SGD, 0.005, 0.01, bounds=((1e-3, 0.01), (1e-4, 1.0)),
                       steps=60, max_trainings=6)
    assert result.bounds == ((1e-3, 0.01), (1e-4, 1.0))  # tune records the box it searched


def test_a_run_whose_objective_rose_has_diverged_and_a_descending_one_has_not(fit_):
    assert apps.divergence(fit_.problem, fit_.trajectory) is None
    blown = refsam.train(PROBLEM, refsam.SAM(0.05), refsam.SGD(100.0, weight_decay=0.01), 50, seed=0)
    reason = apps.divergence(PROBLEM, blown)
    assert reason is not None and reason.startswith("the run diverged: the training objective rose from")


def test_first_misclassified_is_the_first_wrong_prediction_or_none(fit_):
    predicted = fit_.problem.model.predict_proba(fit_.theta_final, X).argmax(axis=1)
    wrong = np.flatnonzero(predicted != Y)
    assert wrong.size and apps.first_misclassified(fit_, X, Y) == wrong[0]
    assert apps.first_misclassified(fit_, X, predicted) is None


def test_unknown_noise_gives_rankings_without_metrics_and_scores_on_file(fit_, tmp_path):
    results = apps.detect_mislabeled(fit_, None, ["closed_form"])
    assert [r.method for r in results] == ["closed_form", "loss", "random"]
    assert all(r.metrics == {} for r in results)
    np.testing.assert_array_equal(results[0].scores, apps.detection_scores(fit_, "closed_form"))
    assert results[0].ranking[0] == np.argmax(results[0].scores)
    rows = np.arange(100, 140)  # the training points' rows in a file
    path = apps.save_scores(tmp_path / "out", results, rows, np.where(Y == 1, "dog", "cat"))
    with open(path, newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["row", "label", "closed_form", "loss"]
    assert [int(line[0]) for line in lines[1:]] == (rows[results[0].ranking]).tolist()
    assert lines[1][1] == ("dog" if Y[results[0].ranking[0]] == 1 else "cat")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scores.csv").write_text("notes\n")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*scores.csv': refsam did not write it"):
        apps.save_scores(tmp_path / "mine", results, rows, Y)
    assert (tmp_path / "mine" / "scores.csv").read_text() == "notes\n"
    apps.save_scores(tmp_path / "out", results, rows, Y)  # its own file: replaced
    with pytest.raises(ValueError, match=r"`rows` and `labels` must have shape \(40,\)"):
        apps.save_scores(tmp_path / "out", results, rows[:3], Y)
