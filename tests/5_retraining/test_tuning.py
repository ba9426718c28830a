"""Hyper-parameter tuning by exact hypergradients, checked by retraining.

Oracles: central finite differences of retraining at ρ ± h, λ ± h (the hypergradient); a grid search,
one training per grid point (the optimum the tuner must reach, within the grid's resolution, with fewer
trainings).
"""

import numpy as np
import pytest

import refsam
from refsam import apps
from refsam.cli import main
from refsam.errors import InvalidInputError


def noisy_softmax(n=60, p=10, seed=0):
    """A 3-class problem that overfits without weight decay (an interior λ optimum), 10% flipped labels,
    and a clean validation set from the same distribution."""
    X, y, _ = refsam.make_gaussian_classification(n=n + 300, n_features=p, n_classes=3, seed=seed)
    y_train, _ = refsam.data.flip_labels(y[:n], 3, 0.1, seed=seed)
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X[:n], y_train)
    return problem, X[n:], y[n:]


BOUNDS = ((1e-3, 0.2), (1e-4, 1.0))
OPTIMIZER = refsam.SGD(0.5, weight_decay=0.01)  # the tuned λ replaces its weight decay
PROCEDURE = {"steps": 200}


@pytest.mark.parametrize("method, batch_size, momentum, penalty",
                         [("closed_form", None, 0.0, "weight_decay"),
                          ("trajectory", None, 0.0, "weight_decay"), ("trajectory", 15, 0.9, "weight_decay"),
                          ("trajectory", None, 0.0, "l2"), ("trajectory", 15, 0.9, "l2")])
def test_the_hypergradient_equals_finite_differences_of_retraining(method, batch_size, momentum, penalty):
    """λ is the optimizer's weight decay, or (penalty="l2", 0.1's coupled mode) the loss's L2 term."""
    problem, X_val, y_val = noisy_softmax()
    lr = 0.05 if momentum else 0.5
    steps = 1500 if method == "closed_form" else 200  # long enough to reach the root: the closed form applies
    optimizer = refsam.SGD(lr, momentum=momentum, weight_decay=0.01 if penalty == "weight_decay" else 0.0)
    trial, fd, err = apps.check_hypergradient(problem, X_val, y_val, optimizer, 0.1, 0.05, method=method,
                                              steps=steps, batch_size=batch_size, penalty=penalty)
    assert trial.method == method  # the closed form is used where the run has converged to its root
    assert np.all(np.abs(fd) > 1e-4)  # both hyper-parameters move the validation loss here
    assert err <= 1e-5


def test_tuning_reaches_the_grid_optimum_with_fewer_trainings():
    problem, X_val, y_val = noisy_softmax()
    grid = apps.grid_search(problem, X_val, y_val, OPTIMIZER, np.geomspace(*BOUNDS[0], 6),
                            np.geomspace(*BOUNDS[1], 9), **PROCEDURE)
    g_rho, g_lam, g_loss = grid.best
    assert BOUNDS[1][0] < g_lam < BOUNDS[1][1]  # an interior optimum in λ: the test can tell
    result = apps.tune(problem, X_val, y_val, OPTIMIZER, 0.05, 0.01, bounds=BOUNDS, max_trainings=30,
                       **PROCEDURE)
    res_rho, res_lam = grid.resolution()
    assert abs(np.log(result.rho / g_rho)) <= res_rho
    assert abs(np.log(result.weight_decay / g_lam)) <= res_lam
    assert result.loss <= g_loss + 1e-6  # at least as good as the grid's best point
    assert result.trainings < grid.trainings
    assert result.trials[0].rho == pytest.approx(0.05, rel=1e-14)  # the search starts at the start
    assert result.loss == min(t.loss for t in result.trials)


def test_tuning_respects_its_budget_and_bounds():
    problem, X_val, y_val = noisy_softmax()
    result = apps.tune(problem, X_val, y_val, OPTIMIZER, 0.05, 0.01, bounds=BOUNDS, max_trainings=3,
                       **PROCEDURE)
    assert result.trainings == 3 and "max_trainings=3" in result.message
    for t in result.trials:
        assert BOUNDS[0][0] * (1 - 1e-12) <= t.rho <= BOUNDS[0][1] * (1 + 1e-12)
        assert BOUNDS[1][0] * (1 - 1e-12) <= t.weight_decay <= BOUNDS[1][1] * (1 + 1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"rho": 2.0}, "must lie inside `bounds`"),
    ({"bounds": ((0.1, 0.01), (1e-4, 1))}, "lower bound must be below"),
    ({"bounds": "wide"}, "`bounds` must be"),
    ({"max_trainings": 0}, "max_trainings"),
    ({"method": "closed_form", "batch_size": 10}, "full-batch"),
    ({"method": "newton"}, "`method` must be one of"),
    ({"lr": -1.0}, "`lr`"),
    ({"optimizer": 0.5}, "`optimizer` must be a refsam optimizer"),
    ({"penalty": "coupled"}, "`penalty` must be one of"),
    ({"method": "closed_form", "penalty": "l2"}, "penalty='l2'"),
])
def test_tuning_bad_input(kwargs, match):
    problem, X_val, y_val = noisy_softmax()
    args = {"rho": 0.05, "weight_decay": 0.01, "lr": 0.5, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        lr = args.pop("lr")
        optimizer = args.pop("optimizer") if "optimizer" in args else refsam.SGD(lr, weight_decay=0.01)
        apps.tune(problem, X_val, y_val, optimizer, args.pop("rho"), args.pop("weight_decay"), **args)


def test_cli_tune_reports_the_checks(capsys, tmp_path):
    code = main(["tune", "--n", "100", "--steps", "100", "--grid", "3", "--max-trainings", "6", "--quiet",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "tuned" in out and "central differences of retraining" in out and "grid search, 3 × 3" in out
    assert "max relative difference" in out and "trainings 6 vs 9" in out


def _tuned_row(out):
    return next(line for line in out.splitlines() if line.startswith("tuned "))


def test_cli_tune_dampening_changes_the_result(capsys):
    """--dampening reaches the optimizer (0.1 printed the same numbers for --dampening 0.9 and 0.0)."""
    common = ["tune", "--n", "60", "--steps", "30", "--max-trainings", "2", "--grid", "0", "--quiet",
              "--no-figures", "--momentum", "0.5"]
    outputs = []
    for dampening in ("0.9", "0.0"):
        assert main([*common, "--dampening", dampening]) == 0
        outputs.append(capsys.readouterr().out)
    assert "hypergradient at the tuned point" in outputs[0]
    assert _tuned_row(outputs[0]) != _tuned_row(outputs[1])
    hypergradients = [next(line for line in out.splitlines() if line.startswith("hypergradient"))
                      for out in outputs]
    assert hypergradients[0] != hypergradients[1]


@pytest.mark.parametrize("argv, match", [
    (["--val-fraction", "1.5"], "--val-fraction"), (["--grid", "1"], "--grid"),
    (["--max-trainings", "0"], "--max-trainings"), (["--rho", "0.5"], "must lie in"),
    (["--rho-max", "0.0001"], "--rho-max"), (["--batch-size", "0"], "--batch-size"),
    (["--momentum", "1.5"], "`momentum` must lie in [0, 1)"), (["--dampening", "2"], "`dampening`"),
    (["--nesterov"], "`nesterov=True` needs `momentum` > 0"),
])
def test_cli_tune_bad_input(argv, match, capsys):
    assert main(["tune", "--quiet", "--no-figures", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
