"""Every reference a reader can follow resolves: docstrings, README.md and docs/*.md link only to
pages and sections that exist.

Docstrings link to the documentation pages as the API reference renders them (``[LAPE](methods.md#lape)``,
relative to ``docs/``); comments and tests name them as ``docs/methods.md#lape``; the Markdown pages
link relative to themselves. ``mkdocs build --strict`` checks the site's links too (in ``.ci/run``);
this test keeps the same promise in the test suite, for the README (which is not part of the
site) and for every docstring, rendered or not.
"""

import ast
import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
SOURCES = sorted([*(REPO / "tl_langneurons").rglob("*.py"), *(REPO / "analyses").glob("*.py"),
                  *(REPO / "tests").glob("*.py")])
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
DOCS_PATH = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")


def _slug(text: str) -> str:
    """Python-Markdown's default heading id (toc.slugify)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _generated_cli_reference() -> str:
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs_hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_markdown()


def anchors(page: Path) -> set[str]:
    """The ids a page's headings and attribute lists give, as the site renders them."""
    text = page.read_text(encoding="utf-8")
    if "<!-- cli-reference -->" in text:
        text += "\n" + _generated_cli_reference()
    ids = set(re.findall(r"\{#([\w-]+)\}", text))
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6}\s+(.*?)\s*$", line)):
            if "{#" not in m.group(1):
                ids.add(_slug(m.group(1)))
    return ids


def check_target(target: str, base: Path, where: str) -> None:
    """``target`` (a relative link) names an existing file and, for a page, an existing section."""
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
        return  # a web address, or a section of the same page (mkdocs checks those)
    path, _, anchor = target.partition("#")
    file = (base / path).resolve()
    assert file.exists(), f"{where}: links to {target!r}, and {file} does not exist"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), f"{where}: links to {target!r}, and {file.name} has no section #{anchor}"


def docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "lineno", 1), doc


def test_no_reference_to_a_methods_file_that_does_not_exist():
    """The docstrings once cited 'METHODS §n' of a file that was never in the repository."""
    stale = re.compile(r"METHODS\s*§|METHODS\.md")
    files = [*SOURCES, *PAGES, *(REPO / "notebooks").glob("*.ipynb")]
    bad = [f"{f.relative_to(REPO)}:{i}" for f in files if f != Path(__file__)
           for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if stale.search(line)]
    assert not bad, f"references to a METHODS file that does not exist: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code are code
    for target in LINK.findall(text):
        check_target(target, page.parent, page.relative_to(REPO).as_posix())


def test_docstring_links_resolve():
    """Docstrings link relative to docs/, where the API reference renders them."""
    n = 0
    for path in SOURCES:
        for line, doc in docstrings(path):
            for target in LINK.findall(doc):
                check_target(target, DOCS, f"{path.relative_to(REPO)}:{line}")
                n += 1
    assert n >= 15  # the methods page is cited where each method is implemented


def test_docs_paths_in_code_resolve():
    """Comments and messages name pages as docs/<page>.md#<section>."""
    for path in SOURCES:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in DOCS_PATH.findall(line):
                check_target(page + (f"#{anchor}" if anchor else ""), DOCS, f"{path.relative_to(REPO)}:{i}")


def test_the_checker_catches_a_missing_section(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Sites {#sites}\n\n## Which tokens count\n")
    check_target("a.md#sites", tmp_path, "t")
    check_target("a.md#which-tokens-count", tmp_path, "t")
    with pytest.raises(AssertionError, match="no section #lape"):
        check_target("a.md#lape", tmp_path, "t")
    with pytest.raises(AssertionError, match="does not exist"):
        check_target("b.md", tmp_path, "t")
