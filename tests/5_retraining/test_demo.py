"""`refsam demo` and the application sub-commands, end to end through the command line."""

import re

import pytest

from refsam import apps
from refsam.apps.demo import DemoConfig, format_report, run_demo
from refsam.apps.plotting import matplotlib_available
from refsam.cli import main
from refsam.data.loaders import sklearn_available
from refsam.tolerances import RTOL_CLOSED_FORM_FD, RTOL_TRAJECTORY_FD


def _table_row(report: str, method: str) -> list:
    for line in report.splitlines():
        if line.startswith(method + " "):
            return line.split()
    raise AssertionError(f"no row for {method!r} in the report")


def test_quick_demo_reports_every_method_beside_its_ground_truth(capsys):
    assert main(["demo", "--quick", "--no-figures", "--quiet"]) == 0
    report = capsys.readouterr().out
    for method in apps.METHODS + ("loss (baseline)", "random (baseline)"):
        assert _table_row(report, method)
    assert "verified root" in report and "spectral radius" in report and "condition number" in report
    # exact methods agree with their finite-difference ground truth; the report's numbers say so
    assert float(_table_row(report, "closed_form")[1]) < RTOL_CLOSED_FORM_FD
    assert float(_table_row(report, "trajectory")[1]) < RTOL_TRAJECTORY_FD
    assert float(_table_row(report, "closed_form_erm")[1]) > RTOL_CLOSED_FORM_FD  # the ablation is not exact


@pytest.mark.slow
def test_default_demo_is_accurate_and_detects_flipped_labels(tmp_path):
    result = run_demo(DemoConfig(out_dir=str(tmp_path) if matplotlib_available() else None,
                                 progress=False))
    by_method = {a.method: a for a in result.agreements}
    assert set(by_method) == set(apps.METHODS)
    assert by_method["closed_form"].max_rel_err < RTOL_CLOSED_FORM_FD
    assert by_method["trajectory"].max_rel_err < RTOL_TRAJECTORY_FD
    assert by_method["closed_form"].pearson > 0.99 and by_method["trajectory"].spearman > 0.95
    detection = {d.method: d.metrics for d in result.detection}
    assert detection["closed_form"]["auroc"] > 0.85 > detection["random"]["auroc"]
    report = format_report(result)
    if matplotlib_available():
        for path in result.figures:
            assert (tmp_path / path.split("/")[-1]).stat().st_size > 0
        assert "Figures written:" in report and str(tmp_path) in report


@pytest.mark.skipif(not matplotlib_available(), reason="matplotlib not installed")
def test_application_commands_write_figures_and_say_where(tmp_path, capsys):
    out = str(tmp_path / "figs")
    common = ["--n", "60", "--steps", "80", "--quiet", "--out", out, "--methods", "closed_form,first_order"]
    assert main(["detect", *common]) == 0
    assert main(["remove", *common, "--k", "3", "--random-trials", "1"]) == 0
    assert main(["explain", *common, "--dataset", "synthetic2d", "--weight-decay", "0.1", "--k", "2"]) == 0
    text = capsys.readouterr().out
    for name in ("detection_curves.png", "removal.png", "explanation.png"):
        assert (tmp_path / "figs" / name).stat().st_size > 0
        assert f"{out}/{name}" in text
    assert "Proponents" in text and "Opponents" in text and "predicted Δf" in text
    row = _table_row(text, "closed_form")  # the detect table: four metrics and a time, all numbers
    assert all(re.fullmatch(r"[0-9.]+", v) for v in row[1:])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--rho", "-1"], "`--rho` must be a finite number >= 0"),
        (["demo", "--methods", "sam-full,bogus"], "--methods must be a comma-separated subset"),
        (["detect", "--dataset", "nowhere.csv"], "cannot read CSV file"),
        (["detect", "--protocols", "--flip", "0"], "no flipped labels to detect"),
        (["explain", "--index", "9999"], "--index must lie in 0..49"),
    ],
)
def test_bad_input_ends_with_one_line_error_and_nonzero_exit(argv, message, capsys):
    assert main([*argv, "--quiet", "--no-figures", "--steps", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(not sklearn_available(), reason="scikit-learn not installed")
def test_labels_that_do_not_fit_the_model_are_a_one_line_error(capsys):
    assert main(["detect", "--dataset", "digits", "--model", "logistic", "--quiet"]) == 2
    assert "model 'logistic' needs 2 classes but dataset 'digits' has 10" in capsys.readouterr().err
