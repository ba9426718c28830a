"""The documentation site reads offline with its maths rendered: built with ``mkdocs build --strict``, no
``$$`` or raw LaTeX is left in the text a reader sees (display maths sits in its own block, where
arithmatex hands it to MathJax), no page loads a script or stylesheet from another host (MathJax ships with
the site), the API reference parses numpydoc (one row per parameter), shows no raw Sphinx roles and links
the refsam names its code spans mention, and no docs source or docstring contains a control character (a
``"\\frac"`` written without ``r`` is a form feed and ``rac``). The site tests skip where the docs extra
(mkdocs) is not installed."""

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # everything below space except tab and newline
RAW_LATEX = re.compile(r"\$\$|\\(?:frac|partial|varepsilon|theta|rho|nabla|lVert|rVert|mathrm|top)\b")
SPHINX_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):`")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


class _Page(HTMLParser):
    """The text a reader sees (outside scripts, code and the maths MathJax typesets) and every resource
    the page loads (script src, stylesheet href)."""

    SKIP = {"script", "style", "code", "pre"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.resources, self._stack = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link" and "stylesheet" in (attrs.get("rel") or "") and attrs.get("href"):
            self.resources.append(attrs["href"])
        if tag in ("link", "meta", "img", "br", "hr", "input"):
            return  # void elements have no end tag
        hidden = tag in self.SKIP or "arithmatex" in (attrs.get("class") or "")
        self._stack.append(hidden or (bool(self._stack) and self._stack[-1]))

    def handle_endtag(self, tag):
        if tag not in ("link", "meta", "img", "br", "hr", "input") and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if not (self._stack and self._stack[-1]):
            self.text.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("the docs extra is not installed: pip install -e \".[docs]\"")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    yield out
    shutil.rmtree(out, ignore_errors=True)


def _pages(site):
    pages = {}
    for path in sorted(site.rglob("*.html")):
        parser = _Page()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[str(path.relative_to(site))] = parser
    return pages


def test_no_dollar_signs_or_raw_latex_are_left_in_the_rendered_text(site):
    pages = _pages(site)
    assert "objective/index.html" in pages and "sam_rules/index.html" in pages
    offenders = {name: sorted(set(RAW_LATEX.findall(" ".join(p.text)))) for name, p in pages.items()}
    assert not {k: v for k, v in offenders.items() if v}, "maths that MathJax will not typeset"
    for name in ("objective/index.html", "sam_rules/index.html"):  # the pages with display maths
        html = (site / name).read_text(encoding="utf-8")
        assert html.count('<div class="arithmatex">') >= 5, f"{name}: display maths not set as blocks"


def test_no_page_loads_a_script_or_stylesheet_from_another_host(site):
    external = {name: [r for r in p.resources if EXTERNAL.match(r)] for name, p in _pages(site).items()}
    assert not {k: v for k, v in external.items() if v}
    remote_url = re.compile(r"url\(\s*['\"]?(?:https?:)?//")
    stylesheets = [p for p in site.rglob("*.css")
                   if remote_url.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert not stylesheets, stylesheets


def test_the_maths_engine_ships_with_the_site_and_every_maths_page_loads_it(site):
    engine = site / "assets" / "mathjax" / "tex-svg.js"
    assert engine.is_file() and engine.stat().st_size > 500_000
    assert (site / "assets" / "mathjax" / "LICENSE").is_file()
    for name, page in _pages(site).items():
        html = (site / name).read_text(encoding="utf-8")
        if 'class="arithmatex"' in html:
            assert any(r.endswith("assets/mathjax/tex-svg.js") for r in page.resources), name


def test_the_api_reference_is_one_page_per_layer_with_one_row_per_parameter_and_no_raw_roles(site):
    api = site / "api"
    layers = {p.parent.name for p in api.glob("*/index.html")}
    assert {"data", "models", "objective", "training", "influence", "ground_truth", "kit", "apps"} <= layers
    html = (api / "influence" / "index.html").read_text(encoding="utf-8")
    section = html[html.index('id="refsam.influence.closed_form.hessian_influence"'):]
    section = section[:section.index('class="doc doc-heading"', 100)]
    names = re.findall(r'<tr class="doc-section-item">\s*<td>\s*<code>([^<]+)</code>', section)
    assert names[:6] == ["problem", "sam", "theta", "X_test", "y_test", "variant"], names
    types = re.findall(r"</code>\s*</td>\s*<td>\s*<code>([^<]*)</code>", section)
    assert not any("problem" in t or "training" in t for t in types), types
    roles = {p: SPHINX_ROLE.findall(" ".join(page.text)) for p, page in _pages(site).items()}
    assert not {k: v for k, v in roles.items() if v}
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="[^"]*#refsam\.influence\.solvers"'
                     r"><code>refsam\.influence\.solvers</code>", section), "code spans are cross-references"
    links = sum(len(re.findall(r'class="autorefs autorefs-internal"', p.read_text(encoding="utf-8")))
                for p in api.glob("*/index.html"))
    assert links >= 50, links


def _docstrings(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", path.name), doc


def test_no_control_characters_in_docs_sources_or_docstrings():
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").rglob("*.md"))
                 if CONTROL.search(p.read_text(encoding="utf-8"))]
    offenders += [f"{p.relative_to(ROOT)}:{name}" for p in sorted((ROOT / "refsam").rglob("*.py"))
                  for name, doc in _docstrings(p) if CONTROL.search(doc)]
    assert not offenders, offenders


def test_docstrings_use_no_sphinx_roles():
    """One rule across refsam/: code spans (docs/scripts/convert_sphinx_roles.py rewrites any that merge)."""
    offenders = [f"{p.relative_to(ROOT)}:{name}" for p in sorted((ROOT / "refsam").rglob("*.py"))
                 for name, doc in _docstrings(p) if SPHINX_ROLE.search(doc)]
    assert not offenders, "run python docs/scripts/convert_sphinx_roles.py: " + ", ".join(offenders[:10])
