"""Rewrite Sphinx cross-reference roles in refsam's docstrings as Markdown code spans.

The API reference is rendered by mkdocstrings from Markdown docstrings, where ``:func:`name``` shows as
raw text. The one rule, applied across ``refsam/``:

* ``:func:`f``` and ``:meth:`C.m``` become ```f()``` and ```C.m()```;
* ``:class:`C```, ``:mod:`m```, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:`` become ```C```, ```m```, ...;
* a leading ``~`` keeps only the last dotted component (Sphinx's display rule): ``:class:`~refsam.SAM```
  becomes ```SAM```;
* a leading ``.`` (a module relative to the file's package) is dropped: ``:mod:`.parallel``` becomes
  ```parallel```.

Every replacement is shorter than the role it replaces, so no line grows past the line limit.

Idempotent: re-run it after merging branches that add roles::

    python docs/scripts/convert_sphinx_roles.py          # rewrites files under refsam/
    python docs/scripts/convert_sphinx_roles.py --check  # exit status 1 if any role is left
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLE = re.compile(r":(?:py:)?(func|meth|class|mod|attr|data|exc|obj):`([^`]+)`")


def _resolve(target: str) -> str:
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target.lstrip(".")


def convert(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        role, target = match[1], re.sub(r"\s+", "", match[2])
        name = _resolve(target)
        if role in ("func", "meth") and not name.endswith(")"):
            name += "()"
        return f"`{name}`"

    return ROLE.sub(replace, text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    left = 0
    for path in sorted((ROOT / "refsam").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        new = convert(text)
        if new != text:
            left += len(ROLE.findall(text))
            if not check:
                path.write_text(new, encoding="utf-8")
    if check and left:
        print(f"{left} Sphinx roles left in refsam/: run python docs/scripts/convert_sphinx_roles.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
