"""Every command that runs a long loop follows one rule for its progress lines on stderr: on by default
where stderr is a terminal and off where it is not (a pipe, a file, a captured test); ``--progress``
forces them on, ``--no-progress`` off, and the applications' ``--quiet`` is ``--no-progress`` (their
one-line "training ..." announcement is a progress line too). The rule itself is the library's
(refsam.validation.check_progress); these tests pin that the command line reaches it."""

import subprocess
import sys

import numpy as np
import pytest
from streams import Pipe, Terminal  # (this folder's helper)

from refsam.cli import main

SMALL = ["--n", "40", "--steps", "20", "--no-figures"]
# Each command at sizes that run in about a second; {tmp}: a fresh directory, {cases}, {bank}: the
# module's reference case and bank with scores of the right shape, {run}: its saved run.
COMMANDS = {
    "demo": ["demo", "--quick", "--subset", "2", "--methods", "closed_form", "--no-figures"],
    "detect": ["detect", "--methods", "closed_form", *SMALL],
    "remove": ["remove", "--methods", "closed_form", "--random-trials", "1", *SMALL],
    "explain": ["explain", *SMALL],
    "edit": ["edit", *SMALL],
    "tune": ["tune", "--grid", "0", "--max-trainings", "2", *SMALL],
    "export-cases": ["export-cases", "{tmp}/cases", "--cases", "logistic-sam-weight_decay-full"],
    "check": ["check", "{cases}", "--scores", "{cases}/scores.npz"],
    "train": ["train", "--steps", "20"],
    "bank": ["bank", "--n", "40", "--steps", "20", "--subsets", "2", "--out", "{tmp}/bank"],
    "lds": ["lds", "--bank", "{bank}", "--scores", "{bank}/scores.npy"],
    "verify": ["verify", "{run}"],
}
APPLICATIONS = ("demo", "detect", "remove", "explain", "edit", "tune")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A reference case and a bank, each beside zero scores of the right shape; a saved run."""
    cases = tmp_path_factory.mktemp("cases")
    bank = tmp_path_factory.mktemp("bank")
    assert main(["export-cases", str(cases), "--cases", "logistic-sam-weight_decay-full"]) == 0
    assert main(["bank", "--n", "40", "--steps", "20", "--subsets", "2", "--out", str(bank), "--force"]) == 0
    case = np.load(cases / "logistic-sam-weight_decay-full.npz")
    np.savez(cases / "scores.npz",
             **{"logistic-sam-weight_decay-full": np.zeros_like(case["influence_trajectory"])})
    stored = np.load(bank / "bank.npz")
    np.save(bank / "scores.npy", np.zeros((stored["masks"].shape[1], stored["outputs"].shape[1])))
    run = tmp_path_factory.mktemp("run") / "run.npz"
    assert main(["train", "--steps", "20", "--save", str(run), "--no-progress"]) == 0
    return {"cases": str(cases), "bank": str(bank), "run": str(run)}


def _stderr_of(command, flags, stream, prepared, tmp_path, monkeypatch, capsys):
    """What `refsam COMMAND ... FLAGS` writes to ``stream`` standing in for stderr (it must succeed), run
    in a fresh directory under ``tmp_path``."""
    fresh = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    fresh.mkdir()
    argv = [a.format(tmp=fresh, **prepared) for a in COMMANDS[command]] + list(flags)
    monkeypatch.setattr(sys, "stderr", stream)
    status = main(argv)
    monkeypatch.undo()
    expected = (0, 1) if command == "check" else (0,)  # check: 1 for the (wrong) zero scores
    assert status in expected, (argv, stream.getvalue())
    capsys.readouterr()  # the report on stdout is not under test
    return stream.getvalue()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_progress_is_on_at_a_terminal_and_off_in_a_pipe_unless_asked(command, prepared, tmp_path, monkeypatch,
                                                                     capsys):
    def err(flags, stream):
        return _stderr_of(command, flags, stream, prepared, tmp_path, monkeypatch, capsys)

    assert err([], Pipe()) == ""  # a pipe or a file gets no progress by default
    assert err([], Terminal()) != ""  # a terminal does
    assert err(["--progress"], Pipe()) != ""  # --progress forces it on
    assert err(["--no-progress"], Terminal()) == ""  # --no-progress forces it off


@pytest.mark.parametrize("command", APPLICATIONS)
def test_quiet_is_no_progress_for_the_applications(command, prepared, tmp_path, monkeypatch, capsys):
    assert _stderr_of(command, ["--quiet"], Terminal(), prepared, tmp_path, monkeypatch, capsys) == ""


@pytest.mark.parametrize("command", ["detect", "remove", "explain", "edit"])
def test_the_training_line_of_the_applications_is_a_progress_line(command, prepared, tmp_path, monkeypatch,
                                                                   capsys):
    """detect, remove, explain and edit announce their training on stderr where progress is on, and only
    there (stdout says the same after training)."""
    assert _stderr_of(command, ["--progress"], Pipe(), prepared, tmp_path, monkeypatch,
                      capsys).startswith("training LogisticRegression() on synthetic")
    assert _stderr_of(command, [], Pipe(), prepared, tmp_path, monkeypatch, capsys) == ""


@pytest.mark.parametrize("command", ["detect", "remove", "explain", "edit"])
def test_the_applications_report_their_training_and_root_solve(command, prepared, tmp_path, monkeypatch,
                                                               capsys):
    """After the announcement, the run's steps and the root solve's Jacobians (a root solve that runs past
    a second; here every one reports at once): `refsam detect --model mlp --dataset digits` was silent
    for 20 s (115 s on a loaded machine) after its training line."""
    from refsam.influence import fixed_point

    monkeypatch.setattr(fixed_point, "PROGRESS_EVERY", 0.0)
    lines = _stderr_of(command, ["--progress"], Pipe(), prepared, tmp_path, monkeypatch, capsys).splitlines()
    assert lines[0].startswith("training LogisticRegression() on synthetic")
    assert lines[1:11] == [f"  training: step {t}/20" for t in range(2, 21, 2)]
    assert lines[11].startswith("  solve_fixed_point (ptc): Jacobian 1/100, ‖G‖ = ")
    assert any(line.startswith("  solve_fixed_point (ptc): converged") for line in lines)


def test_a_piped_application_writes_nothing_to_stderr_and_its_report_to_stdout():
    """A real pipe (a subprocess), not a stand-in stream."""
    result = subprocess.run([sys.executable, "-m", "refsam.cli", *COMMANDS["detect"]], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Most suspicious training rows" in result.stdout
    loud = subprocess.run([sys.executable, "-m", "refsam.cli", *COMMANDS["detect"], "--progress"],
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "detection [1/3] closed_form" in loud.stderr, loud.stderr


def test_every_progress_flag_says_the_same_default():
    """One wording for the one rule, in every command's --help."""
    from refsam.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        flag = next(a for a in commands[name]._actions if "--progress" in a.option_strings)
        assert flag.default is None and "--no-progress" in flag.option_strings, name
        assert flag.help.endswith("(default: when stderr is a terminal)"), (name, flag.help)
