"""The README's quick start is what CI and users run: two commands, the second is CI's test command
verbatim, the first installs and runs the main job, and the README's Python example runs as written."""

import re
import shlex
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def quick_start_commands():
    """The lines of the first ```bash block under '## Quick start'."""
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_second_verbatim():
    install_and_run, test_command = quick_start_commands()
    assert "pip install" in install_and_run and "refsam demo" in install_and_run
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines, f"{test_command!r} is not a line of .ci/run"


def test_quick_start_main_job_is_the_demo_command_with_default_options():
    install_and_run = quick_start_commands()[0]
    words = shlex.split(install_and_run.split("&&")[-1])
    assert Path(words[0]).name == "refsam" and words[1:] == ["demo"]
    # The default demo itself runs in tests/test_demo.py::test_default_demo_is_accurate_and_detects_...


def test_readme_python_example_runs_and_its_shape_comment_is_true():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    shape_comment = re.search(r"trajectory\.thetas\.shape\s+# \((\d+), (\d+)\)", code)
    expected = (int(shape_comment.group(1)), int(shape_comment.group(2)))
    assert namespace["trajectory"].thetas.shape == expected
    assert np.all(np.isfinite(namespace["trajectory"].thetas))


def test_quick_start_installs_what_the_demo_needs_for_its_figures_and_ci_installs_the_same():
    install_and_run = quick_start_commands()[0]
    extras = re.search(r'pip install -e "\.\[([^\]]*)\]"', install_and_run).group(1).split(",")
    assert {"test", "examples"} <= set(extras)  # examples: matplotlib (figures), scikit-learn (datasets)
    ci = re.search(r'pip install --quiet -e "\.\[([^\]]*)\]"', (ROOT / ".ci" / "run").read_text()).group(1)
    assert set(extras) | {"docs"} <= set(ci.split(","))
