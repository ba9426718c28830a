"""Generate docs/api.md, the API reference, from the docstrings of refsam's public modules.

    python docs/scripts/build_api.py            # rewrite docs/api.md
    python docs/scripts/build_api.py --check    # exit 1 if docs/api.md is out of date

Modules are found automatically (every ``refsam.*`` module except private ``_*`` ones and the ``cli*``
command modules, whose reference is ``refsam --help``), in the order of the pipeline. For each: the
module docstring, then every public class and function defined in it with its signature and docstring
(and a class's public methods and properties). The output is deterministic, so a test
(tests/test_examples.py) can require that the committed file is current.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "docs", "api.md")

# The pipeline order of STYLE.md (data → model → objective → SAM → training → influence → ground truth →
# applications, oracle kit); modules not listed here follow alphabetically.
ORDER = ["datasets", "loaders", "models", "objective", "sam", "training", "fixed_point", "closed_form",
         "resolve", "trajectory_influence", "counterfactual", "applications", "demo", "plotting", "cases",
         "testing"]


def _modules() -> list:
    import refsam

    names = [m.name for m in pkgutil.iter_modules(refsam.__path__)
             if not m.name.startswith("_") and not m.name.startswith("cli")]
    ranked = sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"refsam.{n}") for n in ranked]


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "*(no docstring)*"


def _signature(obj) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # no memory addresses: keep the output deterministic


def _block(text: str) -> list:
    return ["```text", text, "```"]


def _class_members(cls) -> list:
    out = []
    for name, member in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            if member.__doc__:
                out += [f"- `{name}` (property): {inspect.cleandoc(member.__doc__).splitlines()[0]}"]
            continue
        func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if inspect.isfunction(func):
            first = inspect.cleandoc(func.__doc__).splitlines()[0] if func.__doc__ else ""
            out += [f"- `{name}{_signature(func)}`" + (f": {first}" if first else "")]
    return out


def _source_line(item):
    """Sort key: position in the source file (definitions without source go last, by name)."""
    try:
        return (inspect.getsourcelines(item[1])[1], item[0])
    except (OSError, TypeError):
        return (sys.maxsize, item[0])


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/scripts/build_api.py`; do not edit by hand "
             "(a test checks that this file is current). Conventions, signs and shapes are stated in each "
             "module's docstring; derivations are linked from the [index](index.md).", ""]
    modules = _modules()
    links = [f"[`{m.__name__}`](#{m.__name__.replace('.', '')})" for m in modules]
    lines += ["Modules: " + ", ".join(links), ""]
    for module in modules:
        lines += [f"## {module.__name__}", ""] + _block(_doc(module)) + [""]
        members = [(name, obj) for name, obj in vars(module).items()
                   if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                   and getattr(obj, "__module__", None) == module.__name__]
        for name, obj in sorted(members, key=_source_line):
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### `{module.__name__}.{name}`", "", f"{kind} `{name}{_signature(obj)}`", ""]
            lines += _block(_doc(obj)) + [""]
            if inspect.isclass(obj):
                members_ = _class_members(obj)
                if members_:
                    lines += members_ + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(OUT, encoding="utf-8") as fh:
            current = fh.read()
        if current != text:
            print("docs/api.md is out of date: run `python docs/scripts/build_api.py`", file=sys.stderr)
            return 1
        print("docs/api.md is up to date")
        return 0
    with open(OUT, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
