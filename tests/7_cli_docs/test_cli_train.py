"""``refsam train``: the command works, its summary is true, ``--save`` writes a replayable
trajectory, and bad input ends with exit status 2 and a one-line error (no traceback).

The README's quick-start command itself (``refsam demo``) is checked in tests/test_readme.py."""

import re

import numpy as np
import pytest

import refsam
from refsam.cli import main


def run(capsys, argv):
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_train_command_with_defaults_trains_and_prints_a_summary(capsys):
    status, out, err = run(capsys, ["train"])
    assert status == 0 and err == ""
    assert "Problem(LogisticRegression(), n=200, p=5, d=6" in out
    assert "SAM(rho=0.05, rule='sam'), SGD(lr=0.5, weight_decay=0.01), steps=500" in out
    accuracy = float(re.search(r"training accuracy\s+= ([0-9.]+)", out).group(1))
    assert 0.6 < accuracy <= 1.0  # separable-ish Gaussian clusters: well above chance


def test_summary_numbers_match_the_python_api(capsys, tmp_path):
    """The printed objective is F(θ_T) of the same run done through the Python API, and --save writes
    that run: loading it gives the same trajectory bit for bit."""
    path = tmp_path / "run.npz"
    status, out, _ = run(capsys, ["train", "--model", "softmax", "--classes", "3", "--n", "40", "--steps",
                                  "30", "--batch-size", "16", "--rule", "asam", "--rho", "0.1",
                                  "--l2", "1e-2", "--weight-decay", "0", "--seed", "3", "--save", str(path)])
    assert status == 0 and f"trajectory written to {path}" in out
    X, y, _ = refsam.make_gaussian_classification(40, 5, 3, seed=3)
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X, y, l2=1e-2)  # 0.1's coupled mode
    expected = refsam.train(problem, refsam.SAM(0.1, "asam"), refsam.SGD(0.5), 30, batch_size=16, seed=3)
    saved = refsam.Trajectory.load(path)
    assert np.array_equal(saved.thetas, expected.thetas)
    assert saved.config["l2"] == 1e-2 and saved.config["optimizer"] == refsam.SGD(0.5).config()
    assert [len(b) for b in saved.batches][:3] == [16, 16, 8]
    printed = float(re.search(r"final objective F\(θ_T\)\s+= ([0-9.]+)", out).group(1))
    assert printed == pytest.approx(float(problem.objective(expected.theta_final)), abs=1e-6)


def test_the_optimizer_flags_make_one_sgd_and_no_bias_decay_spares_the_biases(capsys, tmp_path):
    """--lr --momentum --dampening --nesterov --weight-decay are refsam.SGD's arguments; --l2 is the
    loss's; --no-bias-decay zeros both on the bias coordinates. The saved run is that SGD's, bit for bit."""
    path = tmp_path / "run.npz"
    status, out, _ = run(capsys, ["train", "--n", "30", "--steps", "12", "--lr", "0.2", "--momentum", "0.9",
                                  "--dampening", "0.1", "--nesterov", "--weight-decay", "0.02", "--l2",
                                  "0.03", "--no-bias-decay", "--seed", "1", "--save", str(path)])
    assert status == 0
    X, y, _ = refsam.make_gaussian_classification(30, 5, 2, seed=1)
    model = refsam.LogisticRegression()
    biases = model.bias_mask(5)
    assert biases.sum() == 1
    problem = refsam.Problem(model, X, y, l2=np.where(biases, 0.0, 0.03))
    optimizer = refsam.SGD(0.2, momentum=0.9, dampening=0.1, nesterov=True,
                           weight_decay=np.where(biases, 0.0, 0.02))
    assert f"{optimizer!r}, steps=12" in out
    expected = refsam.train(problem, refsam.SAM(0.05), optimizer, 12, seed=1)
    saved = refsam.Trajectory.load(path)
    assert np.array_equal(saved.thetas, expected.thetas)
    assert saved.config["optimizer"] == optimizer.config() and saved.config["l2"] == problem.l2_config()
    assert set(saved.states) == {"momentum_buffer"}
    np.testing.assert_array_equal(saved.states["momentum_buffer"], expected.states["momentum_buffer"])


@pytest.mark.parametrize("model", ["logistic", "softmax", "mlp"])
def test_every_model_trains_from_the_cli(capsys, model):
    status, out, err = run(capsys, ["train", "--model", model, "--n", "30", "--steps", "5"])
    assert status == 0 and err == "" and "final objective" in out


@pytest.mark.parametrize("argv, message", [
    (["--rho", "-1"], r"`rho` must be a finite number >= 0, got -1.0"),
    (["--lr", "0"], r"`lr` must be a finite number > 0, got 0.0"),
    (["--weight-decay", "-0.5"], r"`weight_decay` must be a finite number >= 0, got -0.5"),
    (["--l2", "-0.5"], r"`l2` must be a finite number >= 0, got -0.5"),
    (["--momentum", "1"], r"`momentum` must lie in \[0, 1\), got 1.0"),
    (["--batch-size", "500"], r"`batch_size` must be <= n=200 \(or None for the full batch\), got 500"),
    (["--steps", "0"], r"`steps` must be an int >= 1, got 0"),
    (["--n", "0"], r"--n must be >= 2, got 0"),
    (["--classes", "1", "--model", "softmax"], r"--classes must be >= 2, got 1"),
    (["--save", "/nonexistent-dir/run.npz", "--steps", "2"], r"the folder '/nonexistent-dir' does not exist"),
])
def test_bad_input_exits_2_with_a_one_line_error(capsys, argv, message):
    status, _, err = run(capsys, ["train", *argv])
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refsam train: error: "), err
    assert re.search(message, lines[0])
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--rule", "adam"], ["--steps", "many"], ["--model", "cnn"]])
def test_unparseable_arguments_exit_2_naming_the_argument(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    _, err = capsys.readouterr()
    assert info.value.code == 2
    assert err.strip().splitlines()[-1].startswith(f"refsam train: error: argument {argv[0]}")


def test_no_command_prints_help_and_exits_2(capsys):
    status, out, _ = run(capsys, [])
    assert status == 2 and "train" in out
