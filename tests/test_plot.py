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
    # the three bands in palettes of their own: no colour (but the unknown grey) is in two bands
    colours = {leg.get_title().get_text(): {tuple(np.round(h.get_facecolor(), 3)) for h, t in
                                            zip(leg.legend_handles, leg.get_texts()) if t.get_text() != "unknown"}
               for leg in fig.legends}
    assert not (colours["branch"] & colours["family"] or colours["family"] & colours["script"]
                or colours["branch"] & colours["script"])
    # a colour bar with more than two labelled ticks, at a legible size
    cbar = next(ax for ax in fig.axes if ax.get_xlabel() == "Jaccard index")
    fig.canvas.draw()
    labels = [t for t in cbar.get_xticklabels() if t.get_text()]
    assert len(labels) >= 3 and min(t.get_fontsize() for t in labels) >= 7


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


def _steer_summary(mode: str, fluent_equals_rate: bool = False):
    import pandas as pd

    rows = []
    factors = [0.0, 1.0, 2.0] if mode == "diffmean" else [4.0, 16.0]
    for k, t in enumerate(["de", "ru", "ja"]):
        for i, f in enumerate(factors):
            r = 0.1 + 0.3 * i + 0.05 * k
            rows.append({"target": t, "mode": mode, "factor": f, "statistic": None if mode == "diffmean" else "mean",
                         "positions": "all", "n": 16, "target_rate": r, "target_low": r - 0.1, "target_high": r + 0.1,
                         "target_fluent_rate": r if fluent_equals_rate else r / 2, "control_rate": 0.05,
                         "baseline_rate": 0.02})
    return pd.DataFrame(rows)


def _style(line) -> tuple:
    """What tells a line apart in print: colour, dash pattern, marker, marker fill."""
    from matplotlib.colors import to_hex

    return (to_hex(line.get_color()), line.get_linestyle(), tuple(line.get_dashes() if hasattr(line, "get_dashes")
            else ()), line.get_marker() or "None", to_hex(line.get_markerfacecolor()))


@pytest.mark.parametrize("mode", ["set", "diffmean"])
def test_steer_rate_vs_factor_small_multiples_and_a_legend_that_matches(mode):
    """One panel per target on shared axes; every plotted series has exactly the style its
    legend entry shows (the old figure's legend drew 'fluent only' solid while the plotted lines
    were dashed); β is labelled β for diffmean; a fluent rate equal to the rate stays visible."""
    fig = plot.steer_rate_vs_factor(_steer_summary(mode, fluent_equals_rate=True))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["de", "ru", "ja"]
    (legend,) = fig.legends
    shown = {t.get_text(): _style(h) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert set(shown) == {s["label"] for s in plot.STEER_STYLES.values()}
    for ax in panels:
        plotted = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        assert set(plotted) == set(plot.STEER_STYLES)
        for name, line in plotted.items():
            assert _style(line) == shown[plot.STEER_STYLES[name]["label"]], name
        # drawn above the target rate, so that equal rates do not hide it
        assert plotted["fluent"].get_zorder() > plotted["target"].get_zorder()
    styles = [v for v in shown.values()]
    assert len(set(styles)) == len(styles)  # four series, four different looks
    xlabel = fig.get_supxlabel()
    assert xlabel.startswith("β") if mode == "diffmean" else xlabel.startswith("factor")


def test_ppl_change_cell_numbers_fit_a_column():
    """The ΔNLL matrix with its control, ten languages: a figure about a column wide (panels stacked)
    whose cell numbers are at least 6 pt, without a leading zero, never a negative zero."""
    import pandas as pd

    langs = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th"]
    rows = [{"ablated": a, "evaluated": e, "condition": c, "nll": 3.0 + d, "ppl": 20.0, "n_tokens": 10, "n_neurons": 3}
            for a in langs for e in langs
            for c, d in (("baseline", 0.0), ("intervention", 0.31 if a == e else -0.0004), ("control", 0.012))]
    fig = plot.ppl_change_heatmap(pd.DataFrame(rows))
    assert fig.get_size_inches()[0] <= 5.0
    heat = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heat] == ["language neurons off", "random neurons off (control)"]
    cells = [t for ax in heat for t in ax.texts]
    assert len(cells) == 2 * len(langs) ** 2 and min(t.get_fontsize() for t in cells) >= 6
    texts = {t.get_text() for t in cells}
    assert texts == {".31", ".00", ".01"}  # −0.0004 at two decimals is ".00"
