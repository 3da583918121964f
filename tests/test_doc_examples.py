"""Every ```python and ```bash block of README.md and docs/*.md runs, as written.

The blocks are read from the Markdown and executed unedited, page by page in document order, each
page in its own empty folder (a later block reads what an earlier one wrote, as a reader working
down the page would). Sizes are cut through the environment, never by editing a block:
``TL_LANGNEURONS_SMOKE=1`` (``tl_langneurons/_smoke.py``) makes the package load at most a few
sentences per language and generate a few tokens, so the commands run in seconds and their numbers
mean nothing. Python blocks of a page share one namespace; a bash block runs line by line:
``tl-langneurons …`` and ``python analyses/….py …`` in this process (the built-in model's files
are then read once, not once per command), anything else in ``bash``. Two things are not run:

* a block preceded by ``<!-- not-run: REASON -->`` (it needs a GPU, the internet, an hour, or it is
  the test suite itself): its test is skipped with the reason, so ``pytest -ra`` lists each one;
* by default, the blocks of docs/*.md: together they cost minutes (every command of the command-line
  guide, each paper's script, fine-tuning), past what the suite can spend on them, so ``.ci/run``
  runs them in a step of their own with ``TL_LANGNEURONS_DOC_EXAMPLES=all``; the README's blocks
  (the demo and the Python example) always run;
* ``pip install …`` inside a block: it would change the environment the tests run in (and takes
  tens of seconds even as a dry run). Its arguments are checked instead — the torch version is the
  one ``.ci/run`` installs and every extra it names exists in ``pyproject.toml``; ``.ci/run``
  installs from nothing for real.
"""

import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ALL = os.environ.get("TL_LANGNEURONS_DOC_EXAMPLES") == "all"  # also the docs pages' blocks (.ci/run)
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.+?)\s*-->\s*$", re.M)  # a line of its own
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # among the page's python/bash blocks
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when the block is marked not to run

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The page's python and bash blocks, with the not-run mark of the line before each (blank
    lines between the mark and the fence are allowed)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if lang in ("python", "bash"):
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mark = NOT_RUN.search(lines[k]) if k >= 0 else None
            out.append(Block(page, len(out), start + 1, lang, "\n".join(lines[start + 1:j]),
                             mark.group(1) if mark else None))
        i = j + 1
    return out


BLOCKS = [b for page in PAGES for b in blocks_of(page)]


# -- running a bash block -------------------------------------------------------------------------


def commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped, ``&&``
    chains split (each part must succeed, as in the shell)."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out += [part.strip() for part in line.split(" && ")]
    return out


def _ci_torch() -> str:
    m = re.search(r"pip install --quiet (torch==\S+)", (REPO / ".ci" / "run").read_text())
    assert m, ".ci/run no longer pins torch"
    return m.group(1)


def check_pip(argv: list[str]) -> None:
    """A ``pip install`` is not run; what it names must exist (see the module docstring)."""
    assert argv[:2] == ["pip", "install"], argv
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for arg in argv[2:]:
        if arg.startswith("torch"):
            assert arg == _ci_torch(), f"the docs install {arg}, .ci/run installs {_ci_torch()}"
        elif arg.startswith("."):
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
            assert m, f"unexpected install target {arg!r}"
            for extra in filter(None, (m.group(1) or "").split(",")):
                assert extra in extras, f"pip install names the extra {extra!r}; pyproject.toml has {sorted(extras)}"
        elif arg != "-e":
            raise AssertionError(f"pip install {arg!r}: the docs install only torch and this package")


def run_in_process(argv: list[str], cwd: Path) -> None:
    if argv[0] == "tl-langneurons" or argv[:3] == ["python", "-m", "tl_langneurons"]:
        from tl_langneurons.cli import main

        rc = main(argv[1:] if argv[0] == "tl-langneurons" else argv[3:])
        assert rc in (0, None), f"{shlex.join(argv)} exited {rc}"
        return
    script = REPO / argv[1]  # python analyses/x.py ...
    old = sys.argv
    sys.argv = [str(script), *argv[2:]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), f"{shlex.join(argv)} exited {e.code}"
    finally:
        sys.argv = old


def run_bash(block: Block, cwd: Path) -> None:
    for command in commands(block.code):
        if re.search(r"[|;<>`$]|\(", command):  # shell syntax: let bash run it
            argv = None
        else:
            argv = shlex.split(command)
        if argv and argv[:2] == ["pip", "install"]:
            check_pip(argv)
        elif argv and (argv[0] == "tl-langneurons" or argv[:3] == ["python", "-m", "tl_langneurons"]
                       or (argv[0] == "python" and len(argv) > 1 and argv[1].startswith("analyses/"))):
            run_in_process(argv, cwd)
        else:
            env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{command!r} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"


# -- pages run in order ---------------------------------------------------------------------------


class PageRun:
    """One page's folder and Python namespace; blocks run in order, each once."""

    def __init__(self, page: Path, folder: Path):
        self.page, self.folder, self.done = page, folder, -1
        self.namespace: dict = {"__name__": "__doc_example__"}
        self.printed: dict[int, str] = {}

    def run_through(self, block: Block) -> None:
        for b in blocks_of(self.page)[self.done + 1: block.index + 1]:
            if b.not_run is None:
                self._run(b)
            self.done = b.index

    def _run(self, b: Block) -> None:
        old = Path.cwd()
        os.chdir(self.folder)
        out = io.StringIO()
        try:
            if b.lang == "python":
                with contextlib.redirect_stdout(out):
                    exec(compile(b.code, b.id, "exec"), self.namespace)
            else:
                with contextlib.redirect_stdout(out):
                    run_bash(b, self.folder)
        finally:
            os.chdir(old)
        self.printed[b.index] = out.getvalue()
        sys.stdout.write(out.getvalue())


@pytest.fixture(scope="module")
def smoke_env():
    """The environment of the examples: smoke sizes, offline, no progress bars, a headless backend."""
    saved = dict(os.environ)
    os.environ.update({"TL_LANGNEURONS_SMOKE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"})
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory, smoke_env):
    runs: dict[Path, PageRun] = {}

    def get(page: Path) -> PageRun:
        if page not in runs:
            runs[page] = PageRun(page, tmp_path_factory.mktemp(page.stem))
        return runs[page]

    return get


def test_blocks_are_found_and_marks_have_reasons():
    """The reader's examples are here, and every not-run mark says why."""
    assert any(b.page.name == "README.md" and b.lang == "python" for b in BLOCKS)
    assert any(b.page.name == "README.md" and b.lang == "bash" and b.not_run is None for b in BLOCKS)
    for b in BLOCKS:
        assert b.not_run is None or len(b.not_run) > 10, f"{b.id}: a not-run mark needs a reason"
    # a not-run mark that is not right before a code block is a typo that would silently run it
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in NOT_RUN.finditer(text):
            rest = text[m.end():].lstrip("\n ")
            assert rest.startswith("```python") or rest.startswith("```bash"), \
                f"{page.name}: {m.group(0)} is not followed by a python or bash block"


def test_commands_split_like_the_shell():
    code = "# a comment\ntl-langneurons record --out s \\\n    --max-sentences 5\npip install torch==2.13.0 && pip install -e .\n"
    assert commands(code) == ["tl-langneurons record --out s --max-sentences 5", "pip install torch==2.13.0",
                              "pip install -e ."]


def test_pip_check_refuses_an_unknown_extra():
    check_pip(["pip", "install", "-e", ".[test]"])
    with pytest.raises(AssertionError, match="nosuchextra"):
        check_pip(["pip", "install", "-e", ".[nosuchextra]"])


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block, page_runs):
    if block.not_run is not None:
        pytest.skip(f"not-run: {block.not_run}")
    if block.page.name != "README.md" and not ALL:
        pytest.skip("a docs page's example: .ci/run runs these with TL_LANGNEURONS_DOC_EXAMPLES=all")
    run = page_runs(block.page)
    run.run_through(block)
    if block.lang == "python" and "print(" in block.code:
        assert run.printed[block.index].strip(), f"{block.id} prints nothing"


def test_smoke_sizes_cut_only_when_asked(monkeypatch, capsys):
    from tl_langneurons import _smoke, load_corpus

    monkeypatch.delenv(_smoke.ENV, raising=False)
    assert _smoke.cap(300, 2) == 300 and _smoke.cap(None, 2) is None
    assert len(load_corpus("builtin", languages=["de"], max_sentences=5)["de"]) == 5
    monkeypatch.setenv(_smoke.ENV, "1")
    monkeypatch.setattr(_smoke, "_warned", False)
    assert _smoke.cap(300, 2) == 2 and _smoke.cap(None, 2) == 2 and _smoke.cap(1, 2) == 1
    assert len(load_corpus("builtin", languages=["de"], max_sentences=5)["de"]) == _smoke.SENTENCES
    assert "the numbers are not results" in capsys.readouterr().err
    monkeypatch.setenv(_smoke.ENV, "0")
    assert _smoke.cap(300, 2) == 300
