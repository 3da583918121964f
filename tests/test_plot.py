"""Every figure function returns a labelled Figure for a small synthetic set; save_figure writes both files."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tl_langneurons.outputs import plot
from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.neurons import LanguageNeurons

LANGS = ["en", "de", "fr", "es", "ru", "uk", "zh", "ja", "xx"]  # "xx": no metadata, banded as unknown


@pytest.fixture(scope="module")
def neurons() -> LanguageNeurons:
    rng = np.random.default_rng(0)
    sets = {k: [(int(f) // 20, int(f) % 20) for f in rng.choice(6 * 20, size=12, replace=False)] for k in LANGS}
    sets["en"] = []  # LAPE gives the dominant language (almost) nothing; figures must cope
    return LanguageNeurons(sets, "manual", {}, "act", {}, 6, 20)


def _labelled(fig: Figure) -> list:
    """Axes with both axis labels set (colour bars and dendrograms have none)."""
    return [ax for ax in fig.axes if ax.get_xlabel() and ax.get_ylabel()]


def _ticks(ax, axis: str) -> list[str]:
    return [t.get_text() for t in getattr(ax, f"get_{axis}ticklabels")()]


@pytest.mark.parametrize("share", [False, True])
def test_layer_placement(neurons, share):
    fig = plot.layer_placement(neurons, share=share)
    assert isinstance(fig, Figure)
    heat = next(ax for ax in fig.axes if ax.get_ylabel() == "language")
    assert _ticks(heat, "y") == LANGS
    assert any(ax.get_xlabel() == "layer" and ax.get_ylabel() for ax in fig.axes)


@pytest.mark.parametrize("metric", ["jaccard", "overlap_coefficient", "intersection"])
def test_overlap_heatmap(neurons, metric):
    fig = plot.overlap_heatmap(neurons, metric)
    (ax,) = _labelled(fig)
    assert _ticks(ax, "x") == LANGS and _ticks(ax, "y") == LANGS


def test_overlap_clustermap(neurons):
    fig = plot.overlap_clustermap(neurons)
    (ax,) = _labelled(fig)
    assert sorted(_ticks(ax, "y")) == sorted(LANGS)
    titles = {leg.get_title().get_text() for leg in fig.legends}
    assert titles == {"branch", "script", "family"}
    family = next(leg for leg in fig.legends if leg.get_title().get_text() == "family")
    assert "unknown" in [t.get_text() for t in family.get_texts()]


def test_shared_by_k(neurons):
    fig = plot.shared_by_k(neurons)
    (ax,) = _labelled(fig)
    assert "k" in ax.get_xlabel()


def test_entropy_distribution():
    h = torch.rand(6, 20, dtype=torch.float64) * np.log(9)
    h[0, :5] = float("inf")
    fig = plot.entropy_distribution(h, threshold=0.5, n_languages=9)
    (ax,) = _labelled(fig)
    xs = [line.get_xdata()[0] for line in ax.get_lines()]
    assert 0.5 in xs and pytest.approx(np.log(9)) in xs
    assert "5 of 120" in ax.get_legend().get_title().get_text()


def test_save_figure(neurons, tmp_path):
    png, pdf = plot.save_figure(plot.overlap_clustermap(neurons), tmp_path / "figs", "clustermap")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["clustermap.pdf", "clustermap.png"]
    with pytest.raises(LangNeuronsError, match="plain file name"):
        plot.save_figure(plot.shared_by_k(neurons), tmp_path, "a/b")
