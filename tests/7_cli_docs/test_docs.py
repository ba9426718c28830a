"""The documentation: every Python block of every page runs as written (a page's blocks in order, sharing
one namespace; docs/validating.md has its own test, which also runs its shell commands), the API page
documents every module of every layer, and no page cites files that are not shipped with refsam."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*) -->\n)?```python\n(?P<code>.*?)```", re.S)
OWN_TEST = {"validating.md",  # tests/6_oracle_kit/test_docs_validating.py runs it in a scratch directory
            "tutorial.md"}  # tests/7_cli_docs/test_tutorial.py runs its blocks and checks what they print


def _runnable_blocks(page):
    """Every python block not marked ``<!-- not run ... -->``; a block marked ``<!-- needs dask -->``
    runs only where dask is installed (the page's other blocks run regardless)."""
    return [m for m in BLOCK.finditer((DOCS / page).read_text(encoding="utf-8"))
            if not (m["mark"] or "").startswith("not run")]


def _pages_with_code():
    return sorted(p.name for p in DOCS.glob("*.md") if p.name not in OWN_TEST and _runnable_blocks(p.name))


@pytest.mark.parametrize("page", _pages_with_code())
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {}
    for match in _runnable_blocks(page):
        if (match["mark"] or "").startswith("needs dask") and importlib.util.find_spec("dask") is None:
            continue  # dask is an optional extra: the block runs where it is installed
        exec(compile(match["code"], f"docs/{page}", "exec"), namespace)


def test_the_api_pages_document_every_module_of_every_layer():
    pages = [DOCS / "api.md", *sorted((DOCS / "api").glob("*.md"))]  # the overview, then one page per layer
    directives = set(re.findall(r"^::: (\S+)$", "".join(p.read_text(encoding="utf-8") for p in pages), re.M))
    modules = set()
    for path in (ROOT / "refsam").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.name == "__init__" or rel.name == "__main__":
            continue
        if rel.parts[1] == "cli":
            continue  # the command line is documented by the tutorial and `refsam --help`
        modules.add(".".join(rel.parts))
    assert modules - directives == set(), "add these modules to a page of docs/api/"
    assert directives - modules == set(), "docs/api/ names modules that do not exist"



def test_no_page_or_docstring_cites_a_file_that_is_not_shipped():
    pattern = re.compile(r"SPEC(\.md| §)|STYLE\.md|\.\./shared")
    offenders = [str(p.relative_to(ROOT)) for folder in ("docs", "refsam", "examples", "benchmarks")
                 for p in (ROOT / folder).rglob("*") if p.suffix in (".md", ".py")
                 and pattern.search(p.read_text(encoding="utf-8"))]
    offenders += ["README.md"] if pattern.search((ROOT / "README.md").read_text(encoding="utf-8")) else []
    assert not offenders, offenders


def test_every_page_links_the_contract():
    pages = [p for p in DOCS.glob("*.md") if p.name not in ("contract.md", "api.md", "results.md")]
    missing = [p.name for p in pages if "contract.md" not in p.read_text(encoding="utf-8")]
    assert not missing, f"pages that do not link docs/contract.md: {missing}"

