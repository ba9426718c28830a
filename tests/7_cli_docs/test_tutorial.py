"""docs/tutorial.md shows what a user gets: every output block on the page is what its command or the
Python block before it prints in a fresh run (docs/scripts/make_tutorial.py writes them; this reruns
them and compares, up to wall-clock times and round-off-level numbers), every Python block runs as
written, in order, and no command assumes an activated virtual environment."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorial.md"


def _script():
    path = ROOT / "docs" / "scripts" / "make_tutorial.py"
    spec = importlib.util.spec_from_file_location("make_tutorial", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_output_on_the_page_is_what_a_fresh_run_prints():
    make = _script()
    text = PAGE.read_text(encoding="utf-8")
    marks = [m["mark"] for m in make.BLOCK.finditer(text)]
    shown = {"demo header", "demo fixed point", "demo methods", "demo detection", "tune"}
    assert {f"output: {name}" for name in shown} <= set(marks)
    assert marks.count("printed") == len(make.PYTHON.findall(text))  # every snippet shows what it prints
    diff = make.differences(text)  # also runs every python block of the page, in order
    assert not diff, "run python docs/scripts/make_tutorial.py:\n" + "\n".join(
        f"{mark}:\n{shown}--- fresh:\n{fresh}" for mark, shown, fresh in diff)


def test_the_comparison_ignores_times_and_round_off_but_not_a_changed_number():
    make = _script()
    shown = "condition number of ∂G/∂θ = 4.484e+00\n‖G(θ̂)‖ = 1.89e-17; 0.03 s\n"
    elsewhere = shown.replace("1.89e-17", "2.1e-16").replace("0.03", "1.2")  # round-off, a slower machine
    assert make.normalise(shown) == make.normalise(elsewhere)
    assert make.normalise(shown) != make.normalise(shown.replace("4.484e+00", "3.003e+00"))
    table = "method  AUROC  time [s]\n------  -----  --------\nclosed  0.948      0.02\n"
    assert make.normalise(table) == make.normalise(table.replace("0.02", "0.44"))
    assert make.normalise(table) != make.normalise(table.replace("0.948", "0.949"))


def test_commands_do_not_assume_an_activated_environment():
    text = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert lines
    bare = [line for line in lines if not line.startswith((".venv/bin/", "#"))]
    assert not bare, f"commands that need an activated venv: {bare}"
