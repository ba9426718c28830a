"""Progress is on by default where stderr is a terminal, and off where it is not (a pipe, a file, a
captured test): the long loops of training, replay, the trajectory methods and the replay ground truths
take ``progress=None`` by default and decide from ``sys.stderr.isatty()``; True and False override it."""

import io
import sys

import pytest

import refsam


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Pipe(io.StringIO):
    def isatty(self):
        return False


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
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    refsam.trajectory_influence(problem, run, X_test, y_test, progress=False)  # verifies (replays) first
    bank = refsam.counterfactual_bank(problem, refsam.SAM(0.05), run, X_test, y_test, kind="retrain",
                                      n_subsets=2)
    assert bank.outputs.shape == (2, 2)
    assert terminal.getvalue() == ""


def test_progress_default_without_a_stderr_is_off(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)  # pythonw and some service launchers
    from refsam.validation import check_progress

    assert check_progress(None) is False
