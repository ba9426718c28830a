"""Nothing silently changed, nothing lost: loaders refuse or handle what would corrupt the data (a
byte-order mark, labels beyond 2^53, complex or masked input, 1e300-scale features), writers refuse to
replace a file refsam did not write, and the CLI checks its arguments before any work."""

import subprocess
import sys
import time

import numpy as np
import pytest

import refsam
from refsam.data import load_csv, load_npz, standardize
from refsam.data.loaders import Dataset


def _cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "refsam.cli", *argv], capture_output=True, text=True,
                          timeout=timeout)


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff1.0,2.0,0\n3.0,4.0,1\n5.0,6.0,0\n".encode())
    data = load_csv(path)
    assert data.n == 3 and data.X[0].tolist() == [1.0, 2.0]


def test_a_numeric_header_is_not_read_as_a_third_class(tmp_path):
    path = tmp_path / "numbered.csv"
    path.write_text("1,2,3\n0.5,1.5,0\n2.5,0.5,1\n1.0,1.0,0\n")  # column numbers, then 2 classes
    with pytest.raises(ValueError, match=r"first line looks like a numeric header \(its label '3' occurs "
                                         r"in no other row\)"):
        load_csv(path)
    skipped = load_csv(path, header=True)
    assert skipped.n == 3 and skipped.n_classes == 2
    kept = load_csv(path, header=False)
    assert kept.n == 4 and kept.n_classes == 3
    ordinary = tmp_path / "ordinary.csv"  # a first row of a class seen again is data, as before
    ordinary.write_text("0.5,1.5,0\n2.5,0.5,1\n1.0,1.0,0\n")
    assert load_csv(ordinary).n == 3
    with pytest.raises(ValueError, match="`header` must be None, True or False"):
        load_csv(ordinary, header="yes")
    result = _cli("detect", "--dataset", str(path), "--steps", "5")
    assert result.returncode == 2 and "looks like a numeric header" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_labels_beyond_2_to_the_53_are_rejected_not_merged(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("1.0,9007199254740993\n2.0,9007199254740992\n3.0,1\n")
    with pytest.raises(ValueError, match=r"labels must be integers of magnitude <= 2\^53"):
        load_csv(path)


def test_complex_or_masked_input_is_rejected(tmp_path):
    X = np.array([[1 + 2j, 0], [0, 1]])
    with pytest.raises(ValueError, match="must hold real numbers, got complex values"):
        refsam.Problem(refsam.LogisticRegression(), X, [0, 1])
    np.savez(tmp_path / "c.npz", X=X, y=np.array([0, 1]))
    with pytest.raises(ValueError, match="features must be real numbers, got complex values"):
        load_npz(tmp_path / "c.npz")
    masked = np.ma.masked_array(np.eye(2), mask=[[True, False], [False, False]])
    with pytest.raises(ValueError, match="masked array with masked entries"):
        refsam.Problem(refsam.LogisticRegression(), masked, [0, 1])


def test_standardize_keeps_1e300_scale_features():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    plain = standardize(Dataset(X, np.zeros(20, dtype=np.int64), 2, "x"))[0].X
    huge = standardize(Dataset(1e300 * X, np.zeros(20, dtype=np.int64), 2, "x"))[0].X
    assert np.all(np.isfinite(huge)) and np.max(np.abs(huge - plain)) <= 1e-12


def test_a_trajectory_never_replaces_a_file_refsam_did_not_write(tmp_path):
    problem = refsam.Problem(refsam.LogisticRegression(), np.eye(3), [0, 1, 0])
    run = refsam.train(problem, refsam.SAM(0.1), refsam.SGD(0.3, weight_decay=0.1), 2)
    mine = tmp_path / "data.csv"
    mine.write_text("precious\n")
    with pytest.raises(ValueError, match="refusing to overwrite .*data.csv.*refsam did not write it"):
        run.save(mine)
    assert mine.read_text() == "precious\n"
    run.save(tmp_path / "run.npz")
    run.save(tmp_path / "run.npz")  # its own file: replaced
    run.save(mine, overwrite=True)
    assert refsam.Trajectory.load(mine).steps == 2
    with pytest.raises(ValueError, match="it is a directory"):
        run.save(tmp_path)


def test_train_save_checks_the_path_before_training_and_keeps_user_files(tmp_path):
    mine = tmp_path / "data.csv"
    mine.write_text("precious\n")
    start = time.perf_counter()
    result = _cli("train", "--steps", "100000", "--save", str(mine))  # would train for minutes
    assert result.returncode == 2 and time.perf_counter() - start < 30
    assert "refusing to overwrite" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert mine.read_text() == "precious\n"
    forced = _cli("train", "--steps", "3", "--save", str(mine), "--force")
    assert forced.returncode == 0 and refsam.Trajectory.load(mine).steps == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["demo", "--flip", "0.999", "--steps", "100000"], r"flip_fraction. 0.999 flips all 200 training labels"),
    (["demo", "--flip", "1.0", "--steps", "100000"], r"--flip must lie in \[0, 1\), got 1.0"),
    (["remove", "--random-trials", "-1", "--steps", "100000"], r"--random-trials must be >= 0, got -1"),
    (["detect", "--momentum", "1.5", "--steps", "100000"], r"`momentum` must lie in \[0, 1\)"),
])
def test_the_cli_checks_its_arguments_before_any_work(argv, message):
    start = time.perf_counter()
    result = _cli(*argv)
    assert result.returncode == 2 and time.perf_counter() - start < 30
    assert len(result.stderr.strip().splitlines()) == 1
    import re

    assert re.search(message, result.stderr), result.stderr


def test_demo_quick_keeps_the_sizes_given_on_the_command_line():
    result = _cli("demo", "--quick", "--steps", "37", "--quiet", "--no-figures", "--methods", "trajectory")
    assert result.returncode == 0, result.stderr
    assert "T = 37" in result.stdout and "n_train" not in result.stderr


def test_train_reports_progress_on_request_and_stays_quiet_without():
    loud = _cli("train", "--steps", "20", "--progress")
    assert loud.returncode == 0 and "step 2/20" in loud.stderr and "step 20/20" in loud.stderr
    quiet = _cli("train", "--steps", "20")  # stderr is a pipe here, not a terminal
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_a_renamed_npy_or_a_truncated_npz_dataset_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "a.npy", np.eye(3))
    (tmp_path / "renamed.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    np.savez(tmp_path / "whole.npz", X=np.eye(4), y=np.array([0, 1, 0, 1]))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read NPZ file .*renamed\.npz.*single array \(an \.npy"):
        load_npz(tmp_path / "renamed.npz")
    with pytest.raises(ValueError, match=r"cannot read NPZ file .*truncated\.npz.*not a zip file"):
        load_npz(tmp_path / "truncated.npz")
    for name in ("renamed.npz", "truncated.npz"):
        result = _cli("detect", "--dataset", str(tmp_path / name), "--steps", "5")
        assert result.returncode == 2 and "cannot read NPZ file" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["demo", "--quick"], ["detect"], ["remove"], ["explain"]])
def test_out_at_a_file_is_refused_before_any_work(tmp_path, command):
    target = tmp_path / "afile"
    target.write_text("mine\n")
    for out, message in ((target, "is a file, not a directory"), (target / "sub", "cannot be created")):
        result = _cli(*command, "--out", str(out))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "training" not in result.stderr and result.stdout == ""  # refused before any work
    assert target.read_text() == "mine\n"


def test_an_unwritable_output_directory_is_refused(tmp_path, monkeypatch):
    """Root ignores permission bits, so the refusal is checked through os.access itself."""
    from refsam.apps.demo import DemoConfig
    from refsam.validation import check_output_directory

    assert check_output_directory("out", tmp_path / "new" / "dir") == str(tmp_path / "new" / "dir")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"`out` .* cannot be written: .* is not writable"):
        check_output_directory("out", tmp_path / "new")
    with pytest.raises(ValueError, match="`out_dir` .* is not writable"):
        DemoConfig(out_dir=str(tmp_path / "figs")).validate()


def test_demo_writes_its_figures_to_the_default_folder_as_the_readme_says(tmp_path):
    """The quick start promises the demo's figures in refsam-figures/ without --out; a change that read
    only --out wrote none (found by running the README verbatim in a new venv)."""
    pytest.importorskip("matplotlib")
    result = subprocess.run([sys.executable, "-m", "refsam.cli", "demo", "--quick", "--quiet", "--methods",
                             "closed_form"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "refsam-figures").glob("*.png"))
    assert written, result.stdout
    assert "Figures written:" in result.stdout and "refsam-figures" in result.stdout
