"""One table of named tolerances (``refsam.tolerances``): every tolerance in the code and the tests is one
of its names, defined nowhere else, and every name in the table carries its reason."""

import ast
from pathlib import Path

import refsam.tolerances as tolerances

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE_PREFIXES = ("RTOL_", "ATOL_")


def _assignments(path):
    """(name, value node, line) of every assignment to an upper-case RTOL_/ATOL_ name in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.startswith(TOLERANCE_PREFIXES):
                    yield target.id, node.value, node.lineno


def test_no_tolerance_is_given_a_value_outside_the_table():
    table = ROOT / "refsam" / "tolerances.py"
    offenders = []
    for folder in ("refsam", "tests", "benchmarks", "examples", "docs"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == table:
                continue
            for name, value, line in _assignments(path):
                alias = isinstance(value, ast.Name) and value.id in tolerances.__all__
                if not alias:  # a new literal value, not an alias of a table entry
                    offenders.append(f"{path.relative_to(ROOT)}:{line} defines {name}")
    assert not offenders, "define tolerances in refsam/tolerances.py only:\n" + "\n".join(offenders)


def test_every_name_in_the_table_has_a_reason_in_its_docstring():
    doc = tolerances.__doc__
    names = [n for n in tolerances.__all__ if n.isupper()]
    assert len(names) == len(set(names)) and len(names) > 20
    missing = [n for n in names if n not in doc]
    assert not missing, f"no reason given for {missing}"
    for name in names:
        assert isinstance(getattr(tolerances, name), float) and getattr(tolerances, name) > 0
