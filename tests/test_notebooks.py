"""Every notebook in notebooks/ executes without a cell error (so they cannot rot).

Notebooks are committed with outputs stripped; this runs each one top to bottom in a fresh
``python3`` kernel, from the notebooks folder, with the repository on ``PYTHONPATH`` so that the
kernel imports this checkout of ``tl_langneurons`` whether or not it is installed.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 900  # per cell; recording on a busy 2-core machine is the slow one
# What a notebook's printed output must show, beyond running: the claims its text makes.
EXPECTED_OUTPUT = {
    "02_intervene_on_language_neurons.ipynb": ["before:  0 hooks", "after:   0 hooks", "hooks left behind: 0"],
}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_stripped(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    # the kernel is a child process: it inherits this environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    threads = os.environ.get("TL_LANGNEURONS_TEST_THREADS")
    if threads:  # a shared machine asks tests for fewer threads; the kernel's torch obeys too
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.output_type == "stream")
    for text in EXPECTED_OUTPUT.get(path.name, []):
        assert text in printed, f"{path.name}: expected {text!r} in the printed output"
