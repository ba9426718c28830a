"""The CLI papercuts of issue 26, each pinned: --version, the --steps metavar, --methods on explain (works)
and edit (refused), a diverged run exits non-zero, tune names a bound its optimum sits on, explain words
a misclassified point's proponents against the predicted class, the protocols tables fit 100 columns
with no empty column, and building the parser imports no numerical code."""

import re
import subprocess
import sys

import pytest

import refsam
from refsam.cli import build_parser, main

FAST = ["--quiet", "--no-figures", "--steps", "100"]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"refsam {refsam.__version__}"


def test_steps_is_shown_as_steps_not_the_internal_name():
    for command in ("demo", "detect", "remove", "explain", "edit", "tune"):
        text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert "--steps STEPS" in text and "STEPS_GIVEN" not in text, command


def test_explain_methods_explains_by_each_method(capsys):
    assert main(["explain", "--methods", "closed_form,trajectory", "--k", "2", *FAST]) == 0
    out = capsys.readouterr().out
    assert out.count("; method closed_form") == 2 and out.count("; method trajectory") == 2


def test_explain_and_edit_refuse_what_they_cannot_do(capsys):
    assert main(["edit", "--methods", "closed_form", *FAST]) == 2
    assert "edit uses one exact method: --method METHOD" in capsys.readouterr().err
    assert main(["explain", "--methods", "bogus", *FAST]) == 2
    assert "--methods must be a comma-separated subset" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["train", "--lr", "100"],
                                  ["detect", "--lr", "100", "--quiet", "--steps", "50"]])
def test_a_diverged_run_exits_non_zero_with_one_line_naming_lr(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "the run diverged" in lines[0] and "lower --lr (got 100.0)" in lines[0]
    assert "training accuracy" not in captured.out


def test_tune_says_when_the_optimum_sits_on_a_bound(capsys):
    assert main(["tune", "--n", "100", "--rho-max", "0.01", "--rho", "0.005", "--grid", "0",
                 "--max-trainings", "8", *FAST]) == 0
    out = capsys.readouterr().out
    assert "note: the tuned ρ sits on its upper bound 0.01" in out and "raise --rho-max" in out


def test_explain_words_a_misclassified_points_proponents_against_the_predicted_class(capsys):
    from refsam import apps
    from refsam.apps.demo import prepare_data
    from refsam.models import build_model

    train, val = prepare_data("synthetic", None, "logistic", None, 0.2, 0)
    problem = refsam.Problem(build_model("logistic", train.p, 2), train.X, train.y)
    fit_ = apps.fit(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.01), 100, seed=0)
    index = apps.first_misclassified(fit_, val.X, val.y)
    assert main(["explain", "--index", str(index), "--k", "2", *FAST]) == 0
    out = capsys.readouterr().out
    label, predicted = re.search(r"label (\d), predicted (\d)", out).groups()
    assert label != predicted
    assert f"support the true label {label} against the predicted class {predicted}" in out
    assert f"towards the predicted class {predicted}" in out and "support the prediction" not in out


def test_detect_protocols_tables_fit_100_columns_with_no_empty_column(capsys):
    assert main(["detect", "--protocols", "--quiet", "--no-figures", "--n", "120", "--methods",
                 "closed_form_frozen"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("Detection protocols"):].splitlines()
    assert max(len(line) for line in section) <= 100
    tables = [i for i, line in enumerate(section) if line.startswith("ranking")]
    assert len(tables) >= 2
    for start in tables:
        header = section[start].split()
        body = []
        for line in section[start + 2:]:
            if not line.strip():
                break
            body.append(line.rsplit(None, len(header) - 1)[1:])  # the value columns
        for column in zip(*body):
            assert set(column) != {"—"}, header


def test_building_the_parser_imports_no_numerical_code():
    probe = ("import sys, refsam.cli; refsam.cli.build_parser(); "
             "print(sorted(m for m in ('scipy', 'scipy.optimize', 'autograd', 'matplotlib', 'refsam.apps', "
             "'refsam.influence', 'refsam.models', 'refsam.training') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_parsers_choices_equal_their_homes():
    from refsam import apps, data, kit, models, sam
    from refsam.apps import demo
    from refsam.cli import choices

    assert choices.MODEL_NAMES == models.MODEL_NAMES and choices.RULES == sam.RULES
    assert choices.METHODS == apps.METHODS and choices.TUNING_METHODS == apps.TUNING_METHODS
    assert choices.TARGETS == kit.TARGETS and choices.BUILTIN_DATASETS == data.BUILTIN_DATASETS
    assert choices.QUICK == demo.QUICK and choices.DEFAULT_FLIP == demo.DEFAULT_FLIP
    from refsam.apps import banks
    from refsam.ground_truth import bank
    from refsam.kit import peers

    assert choices.BANK_TARGETS == banks.TARGETS and choices.PEER_FORMATS == peers.PEER_FORMATS
    assert choices.BANK_KINDS == bank.KINDS and choices.BANK_OUTPUTS == bank.OUTPUTS


def test_the_package_loads_its_names_on_first_use():
    probe = ("import sys, refsam; before = 'autograd' in sys.modules; "
             "print(before, refsam.Problem.__name__, refsam.SGD.__name__, "
             "sorted(set(refsam.__all__) - set(dir(refsam))), 'autograd' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "Problem", "SGD", "[]", "True"], result.stdout + result.stderr
    with pytest.raises(AttributeError, match="module 'refsam' has no attribute 'nope'"):
        refsam.nope  # noqa: B018
