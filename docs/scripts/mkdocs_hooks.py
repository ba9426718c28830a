"""MkDocs hooks (mkdocs.yml ``hooks:``): the site is self-contained, so it reads offline.

* The maths engine ships with the site. MathJax (Apache-2.0) comes from the ``django-static-mathjax``
  wheel on PyPI, a plain copy of MathJax's files with no dependencies (installed by the ``docs`` extra);
  this hook copies its single-file SVG build ``es5/tex-svg.js`` and the licence into
  ``site/assets/mathjax/``. No script or stylesheet is loaded from another host.
* Code is highlighted at build time by Pygments (``pymdownx.highlight``); its stylesheet is generated
  here, instead of the theme's highlight.js from a CDN.
* Docstrings keep their reStructuredText "simple tables" (rows between ``=====  ====`` rules: the method
  table, the tolerance table), which read well in ``help()``; Markdown has no such table, so on the site
  each one is shown as a preformatted block with its columns aligned, not as one run-on paragraph.
* A code span that names a refsam object by its dotted path (```refsam.influence.solvers```) or by a
  name ``refsam`` exports (```train()```, ```Problem```) becomes a cross-reference to its entry in the
  API reference: docstrings stay
  plain code spans (readable in ``help()``), and the site links them. The link is *optional* in
  mkdocs-autorefs' sense: a path that is not documented stays plain text, never a broken link.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from xml.etree import ElementTree

from markdown import Extension
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

MATHJAX_FILES = {"es5/tex-svg.js": "assets/mathjax/tex-svg.js", "LICENSE": "assets/mathjax/LICENSE"}


def _mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    root = None if spec is None or spec.origin is None else Path(spec.origin).parent / "static" / "mathjax"
    if root is None or not (root / "es5" / "tex-svg.js").is_file():
        raise PluginError("the docs need MathJax from PyPI: pip install -e \".[docs]\" "
                          "(the django-static-mathjax package ships it; nothing is fetched from a CDN)")
    return root


def on_files(files: Files, config, **kwargs) -> Files:  # noqa: ANN001 - mkdocs' hook signature
    root = _mathjax_root()
    for source, target in MATHJAX_FILES.items():
        files.append(File.generated(config, target, abs_src_path=str(root / source)))
    from pygments.formatters import HtmlFormatter

    css = HtmlFormatter(style="default").get_style_defs(".highlight")
    files.append(File.generated(config, "assets/pygments.css", content=css))
    return files


RST_RULE = re.compile(r"^\s*={2,}(?: +={2,})+\s*$")


class _SimpleTables(Preprocessor):
    """A reStructuredText simple table (rule, header, rule, rows, rule) becomes a ``text`` block."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(lines):
            rules = [j for j in range(i, min(i + 400, len(lines))) if RST_RULE.match(lines[j])][:3]
            if not (RST_RULE.match(lines[i]) and len(rules) == 3 and rules[1] == i + 2):
                out.append(lines[i])
                i += 1
                continue
            indent = len(lines[i]) - len(lines[i].lstrip())
            body = [line[indent:] for line in lines[i + 1:rules[2]]]
            body[1] = re.sub("=", "-", body[1])  # the header rule, drawn as a dashed line
            out += ["", "```text", *body, "```", ""]
            i = rules[2] + 1
        return out


DOTTED = re.compile(r"(refsam(?:\.[A-Za-z_]\w*)+|[A-Za-z_]\w*)(?:\(\))?")


def _identifier(name: str) -> str | None:
    """The documented path of a code span's name: ``refsam.x.y`` as written, a name exported by
    ``refsam`` (``train``, ``refsam.Problem``) at the module that defines it; None for anything else."""
    import refsam

    short = name.removeprefix("refsam.")
    if "." not in short and short in refsam.__all__:
        obj = getattr(refsam, short)
        module = getattr(obj, "__module__", None)
        return f"{module}.{short}" if module and module.startswith("refsam.") else None
    return name if name.startswith("refsam.") else None


class _CodeCrossRefs(Treeprocessor):
    """``<code>refsam.a.b()</code>`` outside links and code blocks → an optional autorefs reference."""

    def run(self, root: ElementTree.Element) -> None:
        parents = {child: parent for parent in root.iter() for child in parent}
        for code in list(root.iter("code")):
            match = DOTTED.fullmatch((code.text or "").strip())
            identifier = _identifier(match[1]) if match else None
            parent = parents.get(code)
            if identifier is None or parent is None or parent.tag in ("pre", "a", "autoref") or len(code):
                continue
            ref = ElementTree.Element("autoref", {"optional": "", "identifier": identifier})
            ref.tail, code.tail = code.tail, None
            parent.insert(list(parent).index(code), ref)
            parent.remove(code)
            ref.append(code)


class SimpleTables(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 - Python-Markdown's name
        md.preprocessors.register(_SimpleTables(md), "rst_simple_tables", 35)
        md.treeprocessors.register(_CodeCrossRefs(md), "refsam_code_crossrefs", 0)


@event_priority(100)  # before mkdocstrings copies the Markdown extensions for the docstrings
def on_config(config, **kwargs):
    config.markdown_extensions.append(SimpleTables())
    return config
