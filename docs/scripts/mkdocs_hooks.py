"""MkDocs hooks (mkdocs.yml ``hooks:``): the site is self-contained, so it reads offline.

* The maths engine ships with the site. MathJax (Apache-2.0) comes from the ``django-static-mathjax``
  wheel on PyPI, a plain copy of MathJax's files with no dependencies (installed by the ``docs`` extra);
  this hook copies its single-file SVG build ``es5/tex-svg.js`` and the licence into
  ``site/assets/mathjax/``. No script or stylesheet is loaded from another host.
* Code is highlighted at build time by Pygments (``pymdownx.highlight``); its stylesheet is generated
  here, instead of the theme's highlight.js from a CDN.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
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
