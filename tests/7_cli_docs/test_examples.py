"""Every example script runs (quick mode) and passes its own oracle checks, so none rots.

examples/validate_pytorch.py belongs to the oracle kit and is exercised by that kit's tests.
"""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SKIP = {"validate_pytorch.py"}
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if p.name not in SKIP)


def test_there_are_examples_for_each_application():
    names = {p.name for p in SCRIPTS}
    assert {"detect_mislabeled.py", "remove_data.py", "explain_prediction.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs_in_quick_mode(script, tmp_path):
    env = dict(os.environ, REFSAM_EXAMPLE_QUICK="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip()  # it printed a result


def _load_script(name):
    import importlib.util

    path = EXAMPLES.parent / "docs" / "scripts" / name
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_script_runs_in_quick_mode(tmp_path):
    make_results = _load_script("make_results.py")
    out = tmp_path / "results.md"
    assert make_results.main(["--quick", "--datasets", "synthetic", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "QUICK MODE" in text and "| closed_form |" in text and "| random (baseline) |" in text


def test_approximations_script_runs_in_quick_mode(tmp_path):
    make_approximations = _load_script("make_approximations.py")
    assert make_approximations.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "approximations.md").read_text(encoding="utf-8")
    assert "--quick" in text and "| exact | closed_form (direct LU) |" in text
    for estimator in ("gmres", "lissa", "arnoldi", "kfac (full)", "ekfac (frozen)", "gauss_newton",
                      "trak (fisher)", "checkpoints=1", "last_steps=1", "closed_form_frozen"):
        assert f"| {estimator}" in text, estimator
    assert "contract.md" in text  # the page links the contract, like every page


def test_the_approximations_page_is_the_scripts_output():
    """docs/approximations.md is generated, not hand-written: its header names the command."""
    text = (EXAMPLES.parent / "docs" / "approximations.md").read_text(encoding="utf-8")
    assert text.startswith("# Scalable approximations") and "make_approximations.py" in text
    assert "--quick" not in text.splitlines()[4]  # the committed page is a full run


def test_variants_script_runs_in_quick_mode_and_keeps_the_rest_of_each_page(tmp_path):
    """make_variants.py writes only between its markers: the rest of results.md and approximations.md stays,
    and make_results.py / make_approximations.py keep its section when they regenerate their pages."""
    make_variants = _load_script("make_variants.py")
    (tmp_path / "results.md").write_text("# Results\n\nbefore\n", encoding="utf-8")
    assert make_variants.main(["--quick", "--out", str(tmp_path)]) == 0
    assert make_variants.main(["--quick", "--out", str(tmp_path)]) == 0  # a second run replaces, not appends
    text = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nbefore\n") and text.count("<!-- variants:begin -->") == 1
    assert "| logistic | SAM |" in text and "| logistic | GSAM direction (α = 0.4) |" in text
    make_results = _load_script("make_results.py")
    kept = make_results.kept_section(str(tmp_path / "results.md"), "variants")
    assert kept.count("| logistic | SAM |") == 1
    for page in ("results.md", "approximations.md"):
        committed = (EXAMPLES.parent / "docs" / page).read_text(encoding="utf-8")
        assert committed.count("<!-- variants:begin -->") == 1 and "<!-- variants:end -->" in committed
