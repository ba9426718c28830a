"""refsam.kit.testing's oracle-kit additions: ``assert_influence_close`` and the influence strategies.

Claims: the helper passes exactly when the checker's criterion holds and otherwise fails with a
diagnosis that names the cause (location of the worst entries, a flipped sign, a scale factor, a
transposition, non-finite entries); ``influence_problems`` and ``suite_cases`` draw valid runs with
test points on which refsam's exact methods agree with each other and with finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from refsam.ground_truth.replay import finite_difference_replay
from refsam.influence.trajectory import trajectory_influence
from refsam.kit.testing import InfluenceProblem, assert_influence_close, influence_problems, suite_cases
from refsam.tolerances import ATOL_EXACT_METHODS, RTOL_EXACT_METHODS, RTOL_TRAJECTORY_FD


@pytest.fixture
def desired():
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 3))  # (n_train, n_test)


def test_passes_within_and_fails_beyond_the_tolerance(desired):
    scale = np.max(np.abs(desired))
    assert_influence_close(desired + 0.5e-7 * scale, desired, rtol=1e-7)
    assert_influence_close(desired, desired, rtol=0.0)
    with pytest.raises(AssertionError, match="relative error 2.000e-07; 36 of 36 entries"):
        assert_influence_close(desired + 2e-7 * scale, desired, rtol=1e-7)
    assert_influence_close(np.full(4, 1e-9), np.zeros(4), rtol=1e-7, atol=1e-8)
    with pytest.raises(AssertionError):
        assert_influence_close(np.full(4, 1e-7), np.zeros(4), rtol=1e-7, atol=1e-8)


def test_failure_names_the_worst_entry_and_the_rank_correlation(desired):
    actual = desired.copy()
    actual[4, 1] += 1e-3
    with pytest.raises(AssertionError) as info:
        assert_influence_close(actual, desired, rtol=1e-7, err_msg="case logistic-sam")
    message = str(info.value)
    assert message.startswith("influence scores differ: case logistic-sam")
    assert "1 of 36 entries off" in message and "Spearman rank correlation" in message
    worst = message.split("worst entries (index: actual, desired, difference):\n")[1].splitlines()[0]
    assert worst.startswith("  [4, 1]:") and worst.endswith("+1.000e-03")


def test_failure_diagnoses_sign_scale_transpose_nan_and_zeros(desired):
    with pytest.raises(AssertionError, match="the sign is flipped"):
        assert_influence_close(-desired, desired)
    with pytest.raises(AssertionError, match=r"actual ≈ 12 × desired: a constant scale factor"):
        assert_influence_close(12 * desired, desired)
    with pytest.raises(AssertionError, match=r"actual \(3, 12\), desired \(12, 3\); transposed"):
        assert_influence_close(desired.T, desired)
    bad = desired.copy()
    bad[2, 0] = np.nan
    with pytest.raises(AssertionError, match=r"actual has 1 NaN/inf entries, the first at \[2, 0\]"):
        assert_influence_close(bad, desired)
    with pytest.raises(AssertionError, match="actual is identically zero"):
        assert_influence_close(np.zeros_like(desired), desired)
    with pytest.raises(AssertionError) as info:  # a genuine, unstructured mismatch: no false diagnosis
        assert_influence_close(desired + np.random.default_rng(1).standard_normal(desired.shape), desired)
    assert "looks like" not in str(info.value)


@settings(max_examples=10)
@given(influence_problems())
def test_influence_problems_draw_runs_where_exact_methods_agree(case):
    assert isinstance(case, InfluenceProblem)
    assert case.X_test.shape[1] == case.problem.p and case.X_test.shape[0] == case.y_test.shape[0]
    assert case.sam.config() == case.trajectory.sam().config()
    adjoint = trajectory_influence(case.problem, case.trajectory, case.X_test, case.y_test)
    autodiff = trajectory_influence(case.problem, case.trajectory, case.X_test, case.y_test,
                                    method="autodiff")
    assert adjoint.shape == (case.problem.n, len(case.y_test))
    assert_influence_close(adjoint, autodiff, rtol=RTOL_EXACT_METHODS, atol=ATOL_EXACT_METHODS)


@settings(max_examples=6)
@given(suite_cases())
def test_suite_cases_match_replay_finite_differences(case):
    adjoint = trajectory_influence(case.problem, case.trajectory, case.X_test, case.y_test)
    assert np.ptp(adjoint) > 1e-3  # not trivially constant
    fd = finite_difference_replay(case.problem, case.trajectory, case.X_test, case.y_test)
    assert_influence_close(adjoint, fd, rtol=RTOL_TRAJECTORY_FD)


@settings(max_examples=1)
@given(suite_cases("mlp-usam-l2-minibatch"))
def test_suite_cases_pattern_selects_one_configuration(case):
    assert case.problem.l2 > 0 and case.trajectory.optimizer().weight_decay == 0.0 and case.sam.rule == "usam"
    assert case.trajectory.config["batch_size"] == 4 and case.problem.n == 12


def test_suite_cases_rejects_a_pattern_matching_nothing():
    with pytest.raises(ValueError, match="matches no case"):
        suite_cases("resnet-*")
