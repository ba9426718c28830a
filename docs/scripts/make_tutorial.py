"""Write every output shown in docs/tutorial.md from the commands and snippets that produce it.

The tutorial shows what a user gets; this script makes sure it is that, not a number typed once:

* a ```text block preceded by ``<!-- output: NAME -->`` is an excerpt of a command's output (``OUTPUTS``
  below: the command and which lines of its stdout);
* a ```text block preceded by ``<!-- printed -->`` is what the ```python block just before it prints,
  the page's python blocks run in order in one namespace, as a user pasting them would.

    python docs/scripts/make_tutorial.py           # rewrite those blocks of docs/tutorial.md
    python docs/scripts/make_tutorial.py --check   # exit status 1 if the page differs from a fresh run

``tests/7_cli_docs/test_tutorial.py`` runs the check. Comparison ignores wall-clock times and numbers at
round-off level (below 1e-9, which differ between BLAS builds); everything else must match as printed.
Run it after changing a default that the demo, ``tune`` or the snippets depend on.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"(?P<head><!-- (?P<mark>output: [^>]*?|printed) -->\n```text\n)(?P<body>.*?)```", re.S)
PYTHON = re.compile(r"```python\n(?P<code>.*?)```", re.S)


def _between(first: str, *, until_blank: bool = True, last: str | None = None):
    """Lines of an output from the one starting with ``first`` to the next blank line (or ``last``)."""

    def select(lines: list[str]) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(first))
        out = []
        for line in lines[start:]:
            if (until_blank and not line.strip()) or line.startswith("Figures written"):
                break
            out.append(line)
            if last is not None and line.startswith(last):
                break
        return out

    return select


# name: (the command's arguments after `refsam`, the lines shown)
OUTPUTS = {
    "demo header": (["demo"], _between("data ", last="accuracy ")),
    "demo fixed point": (["demo"], _between("end of the run")),
    "demo methods": (["demo"], _between("Influence on f")),
    "demo detection": (["demo"], _between("Detection:")),
    "tune": (["tune"], _between("Tuning ρ and λ", until_blank=False)),
}


def command_output(args: list[str]) -> str:
    """stdout of ``refsam ARGS --no-figures`` run in a scratch directory (progress goes to stderr)."""
    from refsam.cli import main

    out = io.StringIO()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(io.StringIO()):
        os.chdir(scratch)
        try:
            status = main([*args, "--no-figures"])
        finally:
            os.chdir(cwd)
    if status != 0:
        raise RuntimeError(f"refsam {' '.join(args)} exited with status {status}")
    return out.getvalue()


def printed_outputs(text: str) -> list[str]:
    """What each python block of the page prints, the blocks run in order in one namespace."""
    namespace: dict[str, object] = {}
    printed = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            for match in PYTHON.finditer(text):
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(match["code"], "docs/tutorial.md", "exec"), namespace)
                printed.append(out.getvalue())
        finally:
            os.chdir(cwd)
    return printed


def fresh_blocks(text: str) -> list[str]:
    """The body every generated block of the page should have, in page order."""
    runs: dict[tuple[str, ...], list[str]] = {}
    printed = printed_outputs(text)
    python_ends = [m.end() for m in PYTHON.finditer(text)]
    bodies = []
    for match in BLOCK.finditer(text):
        mark = match["mark"]
        if mark == "printed":
            before = [i for i, end in enumerate(python_ends) if end <= match.start()]
            if not before:
                raise ValueError("a <!-- printed --> block with no python block before it")
            bodies.append(printed[before[-1]])
            continue
        name = mark.removeprefix("output: ").strip()
        args, select = OUTPUTS[name]
        if tuple(args) not in runs:
            runs[tuple(args)] = command_output(args).splitlines()
        bodies.append("\n".join(select(runs[tuple(args)])) + "\n")
    return bodies


def render(text: str, bodies: list[str]) -> str:
    it = iter(bodies)
    return BLOCK.sub(lambda m: m["head"] + next(it) + "```", text)


SECONDS = re.compile(r"\b\d+(?:\.\d+)? s\b")  # a wall-clock time in prose: "0.03 s"
TINY = re.compile(r"[-+]?\d+(?:\.\d+)?e-(?:0*9|[1-9]\d+)\b")  # below 1e-8: round-off level


def normalise(body: str) -> str:
    """A block as compared: times and round-off-level numbers replaced, runs of spaces collapsed."""
    lines = [" ".join(TINY.sub("≈0", SECONDS.sub("# s", line)).split()) for line in body.splitlines()]
    header = [i for i, line in enumerate(lines) if line.endswith("time [s]")]
    if header:  # the method table: its last column is a time
        lines[header[0]:] = [re.sub(r" \d+\.\d+$", " #", line) for line in lines[header[0]:]]
    return "\n".join(lines).strip()


def differences(text: str) -> list[tuple[str, str, str]]:
    """(mark, shown, fresh) for every generated block whose text differs from a fresh run."""
    marks = [m["mark"] for m in BLOCK.finditer(text)]
    shown = [m["body"] for m in BLOCK.finditer(text)]
    return [(mark, a, b) for mark, a, b in zip(marks, shown, fresh_blocks(text))
            if normalise(a) != normalise(b)]


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    if "--check" in argv:
        diff = differences(text)
        for mark, shown, fresh in diff:
            print(f"--- {mark}: the page shows\n{shown}+++ a fresh run gives\n{fresh}")
        return 1 if diff else 0
    PAGE.write_text(render(text, fresh_blocks(text)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
