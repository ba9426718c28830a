"""Progress is on by default where stderr is a terminal, and off where it is not (a pipe, a file, a
captured test): every loop that can run past a few seconds — training, replay, the trajectory methods,
the root solver, the replay and re-solve ground truths, counterfactual banks, the applications (fit,
influence, detection, removal, tuning, the ground truth and the demo) and the oracle kit (export,
check) — takes ``progress=None`` by default and decides from ``sys.stderr.isatty()``; True and False
override it, and an explicit False is quiet all the way down."""

import dataclasses
import sys

import numpy as np
import pytest
from streams import Pipe, Terminal  # (this folder's helper)

import refsam
from refsam import apps
from refsam.apps.banks import BankRecipe, build_target
from refsam.ground_truth import finite_difference_parameters
from refsam.influence import fixed_point
from refsam.kit import check_scores, export_cases


def _problem():
    X, y, _ = refsam.make_gaussian_classification(n=12, n_features=2, seed=0)
    return refsam.Problem(refsam.LogisticRegression(), X, y), X[:2], y[:2]


def _calls():
    problem, X_test, y_test = _problem()
    run = refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.1), 10, progress=False)
    return {
        "train": lambda **kw: refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.1), 10, **kw),
        "replay": lambda **kw: refsam.replay(problem, run, **kw),
        "trajectory_influence": lambda **kw: refsam.trajectory_influence(problem, run, X_test, y_test, **kw),
        "trajectory_parameter_influence": lambda **kw: refsam.trajectory_parameter_influence(problem, run,
                                                                                             **kw),
        "trajectory_hyperparameter_sensitivity": lambda **kw: refsam.trajectory_hyperparameter_sensitivity(
            problem, run, **kw),
        "leave_one_out_replay": lambda **kw: refsam.leave_one_out_replay(problem, run, X_test, y_test, [0, 1],
                                                                         **kw),
    }


@pytest.mark.parametrize("name", sorted(_calls()))
def test_progress_defaults_to_whether_stderr_is_a_terminal(name, monkeypatch):
    call = _calls()[name]
    for stream, expect_output in ((Terminal(), True), (Pipe(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        call()
        assert bool(stream.getvalue()) == expect_output, (name, type(stream).__name__, stream.getvalue())
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    call(progress=False)
    assert quiet.getvalue() == ""  # an explicit False wins at a terminal
    loud = Pipe()
    monkeypatch.setattr(sys, "stderr", loud)
    call(progress=True)
    assert loud.getvalue()  # and an explicit True in a pipe


@pytest.mark.parametrize("name", sorted(_calls()))
def test_progress_of_another_type_is_refused(name):
    with pytest.raises(refsam.InvalidInputError, match="`progress` must be True, False or None"):
        _calls()[name](progress="yes")


def test_progress_false_is_quiet_at_a_terminal_inside_every_call(monkeypatch):
    """refsam's own inner loops (the replay that verifies a run, a bank's retrainings, the apps') never
    inherit the terminal default: an explicit progress=False prints nothing (a review found the verifying
    replay printing its steps)."""
    problem, X_test, y_test = _problem()
    run = refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.1), 30, progress=False)  # fresh: not verified
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)  # every root solve would report at once
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    refsam.trajectory_influence(problem, run, X_test, y_test, progress=False)  # verifies (replays) first
    bank = refsam.counterfactual_bank(problem, refsam.SAM(0.05), run, X_test, y_test, kind="retrain",
                                      n_subsets=2, progress=False)  # its retrainings are quiet too
    assert bank.outputs.shape == (2, 2)
    assert terminal.getvalue() == ""


def test_progress_default_without_a_stderr_is_off(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)  # pythonw and some service launchers
    from refsam.validation import check_progress

    assert check_progress(None) is False


# ----- the other loops that can run past a few seconds: re-solve ground truths, banks, apps, the kit -----

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small logistic run with a verified root, held-out points, its ground truth, and a case directory
    with (wrong) scores of the right shape."""
    X, y, flipped = refsam.make_gaussian_classification(n=40, n_features=2, flip_fraction=0.1, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X[:30], y[:30])
    optimizer = refsam.SGD(0.5, weight_decay=0.05)
    fit_ = apps.fit(problem, refsam.SAM(0.05), optimizer, 100, progress=False)
    assert fit_.fixed_point is not None and fit_.fixed_point.converged
    X_val, y_val = X[30:35], y[30:35]
    truth = apps.ground_truth(fit_, X_val, y_val, [0, 1], progress=False)
    cases = tmp_path_factory.mktemp("cases")
    manifest = export_cases(cases, cases="logistic-sam-weight_decay-full", progress=False)
    scores = {case["id"]: np.zeros((case["n_train"], case["n_test"])) for case in manifest["cases"]}
    return fit_, optimizer, X_val, y_val, X[35:], y[35:], flipped[:30], truth, cases, scores


def _long_loops(fitted, tmp_path):
    fit_, optimizer, X_val, y_val, X_test, y_test, flipped, truth, cases, scores = fitted
    problem, sam, root = fit_.problem, fit_.sam, fit_.fixed_point
    true_labels = np.where(flipped, 1 - problem.y, problem.y)

    def fresh():  # a copy of the fit without its cached self-influence (which a second call would reuse)
        return dataclasses.replace(fit_, _cache={})

    return {
        "leave_one_out": lambda **kw: refsam.leave_one_out(problem, sam, root, X_val, y_val, [0, 1], **kw),
        "finite_difference_influence": lambda **kw: refsam.finite_difference_influence(
            problem, sam, root, X_val, y_val, [0, 1], **kw),
        "finite_difference_parameters": lambda **kw: finite_difference_parameters(problem, sam, root, [0, 1],
                                                                                    **kw),
        "counterfactual_bank": lambda **kw: refsam.counterfactual_bank(problem, sam, root, X_val, y_val,
                                                                       n_subsets=2, **kw),
        "apps.fit": lambda **kw: apps.fit(problem, sam, optimizer, 10, solve_root=False, **kw),
        "apps.influence": lambda **kw: apps.influence(fit_, "trajectory", X_val, y_val, **kw),
        "apps.fit_self_influence": lambda **kw: apps.fit_self_influence(fresh(), "trajectory", **kw),
        "apps.detection_scores": lambda **kw: apps.detection_scores(fresh(), "trajectory", **kw),
        "apps.detect_mislabeled": lambda **kw: apps.detect_mislabeled(fit_, flipped, ["closed_form"], **kw),
        "apps.detection_protocols": lambda **kw: apps.detection_protocols(
            fit_, flipped, true_labels, X_val, y_val, X_test, y_test, ["closed_form"], **kw),
        "apps.remove_harmful": lambda **kw: apps.remove_harmful(fit_, X_val, y_val, 1, ["closed_form"],
                                                                n_random=1, **kw),
        "apps.removal_curves": lambda **kw: apps.removal_curves(fit_, X_val, y_val, X_test, y_test, [0, 1],
                                                                ["closed_form"], n_random=1, **kw),
        "apps.ground_truth": lambda **kw: apps.ground_truth(fit_, X_val, y_val, [0, 1], **kw),
        "apps.compare_methods": lambda **kw: apps.compare_methods(fit_, X_val, y_val, truth, ["closed_form"],
                                                                  **kw),
        "apps.tune": lambda **kw: apps.tune(problem, X_val, y_val, optimizer, steps=20, max_trainings=2,
                                            **kw),
        "apps.grid_search": lambda **kw: apps.grid_search(problem, X_val, y_val, optimizer, [0.05], [0.05],
                                                          steps=20, **kw),
        "apps.banks.build_target": lambda **kw: build_target(BankRecipe(n=30, steps=20, target="run"),
                                                             **kw),
        "kit.export_cases": lambda **kw: export_cases(tmp_path / "again",
                                                      cases="logistic-sam-weight_decay-full", **kw),
        "kit.check_scores": lambda **kw: check_scores(cases, scores, **kw),
    }


LONG_LOOPS = ("leave_one_out", "finite_difference_influence", "finite_difference_parameters",
              "counterfactual_bank", "apps.fit", "apps.influence", "apps.fit_self_influence",
              "apps.detection_scores", "apps.detect_mislabeled", "apps.detection_protocols",
              "apps.remove_harmful", "apps.removal_curves", "apps.ground_truth", "apps.compare_methods",
              "apps.tune", "apps.grid_search", "apps.banks.build_target", "kit.export_cases",
              "kit.check_scores")


@pytest.mark.parametrize("name", LONG_LOOPS)
def test_every_long_loop_reports_progress_at_a_terminal_and_only_there(name, fitted, tmp_path, monkeypatch):
    """The loops that can run past a few seconds beyond training and replay (re-solve ground truths, banks,
    the applications, the oracle kit) default to progress=None too; an explicit False is quiet at a
    terminal all the way down (their nested loops do not inherit the terminal default: the root solves
    inside them would report at once here)."""
    call = _long_loops(fitted, tmp_path)[name]
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)
    for attempt, (stream, keywords, expect_output) in enumerate(
            ((Terminal(), {}, True), (Pipe(), {}, False), (Terminal(), {"progress": False}, False))):
        if name == "kit.export_cases":
            keywords = {**keywords, "force": attempt > 0}  # the same directory again
        monkeypatch.setattr(sys, "stderr", stream)
        call(**keywords)
        assert bool(stream.getvalue()) == expect_output, (name, type(stream).__name__, keywords,
                                                          stream.getvalue())


def _solve(fitted, **kw):
    fit_, optimizer = fitted[0], fitted[1]
    return refsam.solve_fixed_point(fit_.problem, fit_.sam, fit_.trajectory.theta_final, optimizer=optimizer,
                                    **kw)


def test_the_root_solver_reports_each_jacobian_at_a_terminal_and_only_there(fitted, monkeypatch):
    """solve_fixed_point: one line per Jacobian (its unit of cost) with ‖G‖ against tol, then the method's
    stopping reason; progress=None decides from the terminal, True and False override it."""
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)  # (default: at most a line a second)
    for stream, keywords, expect_output in ((Terminal(), {}, True), (Pipe(), {}, False),
                                            (Terminal(), {"progress": False}, False),
                                            (Pipe(), {"progress": True}, True)):
        monkeypatch.setattr(sys, "stderr", stream)
        root = _solve(fitted, method="ptc", **keywords)
        lines = stream.getvalue().splitlines()
        assert bool(lines) == expect_output, (type(stream).__name__, keywords, lines)
    assert root.converged and len(lines) == root.iterations + 1
    assert lines[0].startswith("  solve_fixed_point (ptc): Jacobian 1/100, ‖G‖ = ")
    assert f"Jacobian {root.iterations}/100" in lines[-2]
    assert lines[-1].startswith(f"  solve_fixed_point (ptc): converged, ‖G‖ = {root.residual:.2e} after "
                                f"{root.iterations} Jacobians")


def test_the_root_solvers_polish_continues_the_count_of_its_method(fitted, monkeypatch):
    """hybr's Newton polish spends the same budget: its lines go on counting where MINPACK stopped."""
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(sys, "stderr", Pipe())
    root = _solve(fitted, method="hybr", progress=True)
    lines = sys.stderr.getvalue().splitlines()
    counts = [int(line.split("Jacobian ")[1].split("/")[0]) for line in lines if "Jacobian " in line]
    assert counts == list(range(1, root.iterations + 1))
    assert any("(hybr, Newton polish)" in line for line in lines)
    assert lines[-1].startswith(f"  solve_fixed_point (hybr): converged, ‖G‖ = {root.residual:.2e} after "
                                f"{root.iterations} Jacobians")


@pytest.mark.parametrize("method", ["hybr", "lm", "ptc", "newton"])
def test_each_progress_line_gives_the_residual_where_its_jacobian_was_taken(method, monkeypatch):
    """‖G‖ on a line is the residual at the point where that Jacobian was taken (oracle: residual_map
    there). MINPACK evaluates G at trial points it then rejects and takes J back at its current point; a
    review found hybr's lines giving the last trial's ‖G‖ (0.59 where it was 0.50). A tanh MLP (3, 4, 2)
    from a 50-step run, where hybr rejects trials (3 of its 14 lines were wrong)."""
    X, y, _ = refsam.make_gaussian_classification(80, 3, 2, separation=1.0, flip_fraction=0.05, seed=0)
    problem = refsam.Problem(refsam.MLP((3, 4, 2), "tanh"), X[:60], y[:60])
    sam, optimizer = refsam.SAM(0.05), refsam.SGD(0.1, momentum=0.9, weight_decay=1e-2)
    start = refsam.train(problem, sam, optimizer, 50, progress=False).theta_final
    taken, linearise = [], fixed_point.linearise

    def recording(problem_, sam_, theta, *args, **kw):  # the points where the solver takes J
        taken.append(np.array(theta))
        return linearise(problem_, sam_, theta, *args, **kw)

    monkeypatch.setattr(fixed_point, "linearise", recording)
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(sys, "stderr", Pipe())
    fixed_point_ = refsam.solve_fixed_point(problem, sam, start, optimizer=optimizer, method=method,
                                            max_iter=20, raise_on_failure=False, progress=True)
    lines = [line for line in sys.stderr.getvalue().splitlines() if "Jacobian " in line]
    # (one more J after the solve: the returned point's diagnostics)
    assert lines and len(lines) == len(taken) - 1 == fixed_point_.iterations
    printed = [float(line.split("‖G‖ = ")[1].split(" ")[0]) for line in lines]
    expected = [np.linalg.norm(refsam.residual_map(problem, sam, t, optimizer=optimizer)) for t in taken[:-1]]
    np.testing.assert_allclose(printed, expected, rtol=5e-3)  # (printed to 3 digits)


def test_a_quick_root_solve_prints_nothing_even_when_asked(fitted, monkeypatch):
    """No line in the first PROGRESS_EVERY seconds: a solve of a few milliseconds stays quiet."""
    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 60.0)
    monkeypatch.setattr(sys, "stderr", Pipe())
    assert _solve(fitted, progress=True).converged
    assert sys.stderr.getvalue() == ""


@pytest.mark.parametrize("progress", ["yes", 1, 0])
def test_the_root_solver_refuses_progress_of_another_type(fitted, progress):
    with pytest.raises(refsam.InvalidInputError, match="`progress` must be True, False or None"):
        _solve(fitted, progress=progress)


def test_a_long_loop_refuses_progress_of_another_type(fitted, tmp_path):
    with pytest.raises(refsam.InvalidInputError, match="`progress` must be True, False or None"):
        _long_loops(fitted, tmp_path)["counterfactual_bank"](progress="yes")


def test_the_demo_reports_progress_at_a_terminal_and_only_there(monkeypatch):
    from refsam.apps.demo import DemoConfig, run_demo

    for stream, expect_output in ((Terminal(), True), (Pipe(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        run_demo(DemoConfig(n=40, steps=50, subset=2, methods=("closed_form",)))
        assert bool(stream.getvalue()) == expect_output, type(stream).__name__
