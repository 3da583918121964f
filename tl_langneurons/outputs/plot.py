"""Figures from results (neuron sets, entropy tensors, measurement frames); computes nothing beyond
:mod:`.analysis` and the summaries of :mod:`.evaluate`.

Each function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG
(200 dpi) and PDF. Figures are built on the Agg canvas without pyplot, so importing this module
never switches the user's backend (a notebook keeps its inline one) and pyplot's registry does not
keep every figure alive. The clustermap is the exception — seaborn builds it through pyplot — and
is taken out of pyplot's registry before it is returned.

Sizes grow with the number of languages and layers so that 27+ language codes stay readable.
"""

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from jaxtyping import Float
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import (
    FixedLocator,
    FormatStrFormatter,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)
from torch import Tensor

from .. import analysis
from ..errors import LangNeuronsError
from ..neurons import LanguageNeurons

METRIC_LABELS = {
    "jaccard": "Jaccard index",
    "overlap_coefficient": "overlap coefficient",
    "intersection": "shared neurons",
}
TICK_FONT = 7  # language codes and layer numbers; 27 codes need ≤ 0.25 in per row at this size
ROW_IN = 0.24  # inches per language row


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _tick_step(n: int, max_labels: int = 40) -> int:
    # label every layer up to 40 layers, then every 2nd, 4th...: numbers must not touch
    return max(1, math.ceil(n / max_labels))


def layer_placement(neurons: LanguageNeurons, share: bool = False) -> Figure:
    """Where each language's neurons sit: heatmap language × layer above bars of the pooled union.

    ``share=False`` shows counts; ``share=True`` the percentage of the layer's ``d_mlp`` neurons.
    """
    dist = analysis.layer_distribution(neurons)
    value = "share_of_layer" if share else "count"
    scale = 100.0 if share else 1.0
    mat = analysis.layer_matrix(dist, value) * scale
    pooled = dist[dist.language == analysis.ALL]
    K, L = mat.shape
    unit = "% of layer's neurons" if share else "neurons"

    fig = _figure(max(6.0, 0.22 * L + 2.0), ROW_IN * K + 2.6)
    gs = fig.add_gridspec(2, 2, height_ratios=[ROW_IN * K + 0.4, 1.5], width_ratios=[1, 0.02])
    ax = fig.add_subplot(gs[0, 0])
    cax = fig.add_subplot(gs[0, 1])
    axb = fig.add_subplot(gs[1, 0], sharex=ax)
    sns.heatmap(mat, ax=ax, cbar_ax=cax, cmap="rocket_r", vmin=0, xticklabels=_tick_step(L), yticklabels=True,
                cbar_kws={"label": unit})
    ax.set_ylabel("language")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelbottom=False)
    ax.tick_params(axis="y", labelsize=TICK_FONT, rotation=0)
    # heatmap cells are centred on layer + 0.5; the shared x axis puts the bars under their column
    axb.bar(pooled.layer.to_numpy() + 0.5, pooled[value].to_numpy() * scale, width=0.8, color="0.35")
    axb.set_xlabel("layer")
    axb.set_ylabel(f"{unit}, union\nof all languages", fontsize=8)
    axb.tick_params(axis="x", labelsize=TICK_FONT, rotation=0)
    axb.tick_params(axis="y", labelsize=TICK_FONT)
    axb.margins(y=0.1)
    sns.despine(ax=axb)
    return fig


def overlap_heatmap(neurons: LanguageNeurons, metric: str = "jaccard", annotate: bool | None = None) -> Figure:
    """Square heatmap of pairwise overlap in the order of ``neurons.languages``; diagonal left blank.

    Values are written in the cells when ``annotate`` (default: only up to 12 languages, beyond
    which the numbers no longer fit).
    """
    mat = analysis.overlap_matrix(analysis.overlap(neurons), metric)
    K = len(mat)
    annotate = K <= 12 if annotate is None else annotate
    side = max(3.5, 0.3 * K + 1.8)
    fig = _figure(side + 0.9, side)
    ax = fig.add_subplot()
    sns.heatmap(mat, ax=ax, mask=np.eye(K, dtype=bool), cmap="mako_r", vmin=0, square=True,
                xticklabels=True, yticklabels=True, annot=annotate,
                fmt="d" if metric == "intersection" else ".2f", annot_kws={"fontsize": 6},
                cbar_kws={"label": METRIC_LABELS[metric], "shrink": 0.7})
    ax.set_xlabel("language")
    ax.set_ylabel("language")
    ax.tick_params(labelsize=TICK_FONT)
    ax.tick_params(axis="x", rotation=90)
    ax.tick_params(axis="y", rotation=0)
    return fig


# One palette family per band, so that a colour in one band is never read as a group of another:
# branch in light pastels, family in strong saturated colours, script in dark earthy ones (each list
# most distinct first; beyond its length, evenly spaced hues at that band's lightness).
_BRANCH_COLOURS = sns.color_palette("Set3") + sns.color_palette("Pastel1")
_FAMILY_COLOURS = sns.color_palette("bright")
_SCRIPT_COLOURS = sns.color_palette("dark") + sns.color_palette("Dark2")
_BAND_FALLBACK = {"branch": (0.8, 0.75), "family": (0.65, 0.55), "script": (0.35, 0.6)}  # (lightness, saturation)


def _palette(values: list[str], colours: list, band: str = "family") -> dict[str, tuple]:
    levels = sorted(set(values) - {"unknown"})
    if len(levels) > len(colours):
        lightness, saturation = _BAND_FALLBACK[band]
        colours = sns.hls_palette(len(levels), l=lightness, s=saturation)
    out = dict(zip(levels, colours))
    if "unknown" in values:  # neutral grey: not to be read as one more group
        out["unknown"] = (0.8, 0.8, 0.8)
    return out


def overlap_clustermap(neurons: LanguageNeurons, metric: str = "jaccard") -> Figure:
    """Overlap matrix reordered by average-linkage clustering, with branch, family and script
    colour bands (branch first: on real models the most informative grouping, see the README).

    Languages without metadata are banded as ``"unknown"``. Legends for the bands sit to the right.
    """
    mat = analysis.overlap_matrix(analysis.overlap(neurons), metric)
    K = len(mat)
    meta = analysis.language_table(list(mat.index), strict=False).set_index("language")
    palettes = {"branch": _palette(list(meta.branch), _BRANCH_COLOURS, "branch"),
                "family": _palette(list(meta.family), _FAMILY_COLOURS, "family"),
                "script": _palette(list(meta.script), _SCRIPT_COLOURS, "script")}
    bands = meta[list(palettes)].apply(lambda col: col.map(palettes[col.name]))
    link = analysis.overlap_linkage(mat)
    side = max(5.0, 0.26 * K + 2.5)
    g = sns.clustermap(mat, row_linkage=link, col_linkage=link, mask=np.eye(K, dtype=bool), cmap="mako_r", vmin=0,
                       row_colors=bands, xticklabels=True, yticklabels=True, figsize=(side, side),
                       dendrogram_ratio=0.12, colors_ratio=0.025,
                       cbar_pos=(1.0, 0.0, 0.2, 0.02),  # placed under the legends below
                       cbar_kws={"label": METRIC_LABELS[metric], "orientation": "horizontal"})
    plt.close(g.figure)  # off pyplot's registry: the caller owns the returned figure
    ax = g.ax_heatmap
    ax.set_xlabel("language")
    ax.set_ylabel("language")
    ax.tick_params(labelsize=TICK_FONT)
    ax.tick_params(axis="x", rotation=90)
    ax.tick_params(axis="y", rotation=0)
    g.ax_row_colors.tick_params(labelsize=TICK_FONT)
    # legends outside the heatmap on the right, beyond the row labels; save_figure uses a tight
    # bounding box so they are kept in the file
    anchor_y = 1.0
    for band in palettes:
        handles = [Patch(facecolor=c, edgecolor="0.6", linewidth=0.3, label=k) for k, c in palettes[band].items()]
        leg = g.figure.legend(handles=handles, title=band, loc="upper left", bbox_to_anchor=(1.0, anchor_y),
                              fontsize=7, title_fontsize=8, frameon=False, handlelength=1.0, borderaxespad=0,
                              alignment="left")
        # stack each legend under the one before, whatever their heights
        g.figure.canvas.draw()
        bbox = leg.get_window_extent().transformed(g.figure.transFigure.inverted())
        anchor_y = bbox.y0 - 0.03
    # the colour bar under the legends, wide enough for four labelled ticks
    g.cax.set_position([1.005, anchor_y - 0.05, 0.2, 0.022])
    g.cax.xaxis.label.set_size(8)
    g.cax.xaxis.set_label_position("top")
    g.cax.tick_params(labelsize=7)
    g.cax.xaxis.set_major_locator(MaxNLocator(4))
    g.cax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    return g.figure


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.005 else "<1%"  # a non-empty bar never reads "0%"


def shared_by_k(neurons: LanguageNeurons) -> Figure:
    """Bars: how many neurons belong to exactly k languages, labelled with their share of the union."""
    df = analysis.shared_by_k(neurons)
    nonzero = df.k[df.n_neurons > 0]
    kmax = int(nonzero.max()) if len(nonzero) else 1
    df = df[df.k <= kmax]
    fig = _figure(max(3.5, 0.32 * kmax + 1.8), 3.0)
    ax = fig.add_subplot()
    ax.bar(df.k, df.n_neurons, width=0.8, color=sns.color_palette("mako", 3)[1])
    ax.bar_label(ax.containers[0], labels=[_percent(s) if n else "" for s, n in zip(df.share, df.n_neurons)],
                 fontsize=6, padding=1)
    ax.set_xticks(df.k)
    ax.set_xlim(0.4, kmax + 0.6)
    ax.set_xlabel("languages sharing the neuron (k)")
    ax.set_ylabel("neurons")
    ax.tick_params(labelsize=TICK_FONT)
    ax.margins(y=0.12)
    sns.despine(ax=ax)
    return fig


def entropy_distribution(entropy: Float[Tensor, "layer d_mlp"], threshold: float | None = None,
                         n_languages: int | None = None, bins: int = 100, log_count: bool = True) -> Figure:
    """Histogram of the neurons' entropy over languages (e.g. LAPE's), the selection cutoff marked.

    Ineligible neurons (entropy ``+inf``) are counted in the legend, not drawn. ``n_languages``
    marks the maximum ``log K``. The count axis is logarithmic by default: the few low-entropy
    neurons that get selected would otherwise vanish next to the bulk near ``log K``.
    """
    h = entropy.detach().double().flatten().cpu()
    finite = h[torch.isfinite(h)].numpy()
    n_inf = int(h.numel() - finite.size)
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    if finite.size:
        ax.hist(finite, bins=bins, log=log_count, color=sns.color_palette("mako", 3)[1])
    handles = []
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="tab:red", linestyle="--", label=f"selection cutoff = {threshold:.3g}"))
    if n_languages is not None:
        ax.axvline(math.log(n_languages), color="0.3", linestyle=":", linewidth=1)
        handles.append(Line2D([], [], color="0.3", linestyle=":", label=f"log K = {math.log(n_languages):.3g}"))
    # above the axes, so that it never hides the bars or the cutoff line
    ax.legend(handles=handles, title=f"{n_inf:,} of {h.numel():,} neurons ineligible (H = ∞)", fontsize=7,
              title_fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=max(1, len(handles)),
              frameon=False, borderaxespad=0.2)
    if log_count:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks crowd a short log axis
    ax.set_xlabel("entropy over languages (nats)")
    ax.set_ylabel("neurons")
    ax.tick_params(labelsize=TICK_FONT)
    sns.despine(ax=ax)
    return fig


def _compact(v: float, decimals: int) -> str:
    """A cell number that fits a narrow cell: no leading zero (``.084``, ``−.025``), a true minus."""
    if not math.isfinite(v):
        return ""
    v = round(v, decimals) + 0.0  # + 0.0: a value that rounds to zero is ".00", not "−.00"
    text = f"{v:.{decimals}f}"
    if text.lstrip("-").startswith("0.") and decimals > 0:
        text = text.replace("0.", ".", 1)
    return text.replace("-", "−")


CELL_FONT = 6.5  # cell numbers: still ≥ 5 pt when the figure is printed at a column's width (3.3 in)


def _change_panels(panels: dict[str, pd.DataFrame], own: dict[str, str], annotate: bool | None, cmap: str, fmt: str,
                   xlabel: str, ylabel: str, cbar_label: str) -> Figure:
    """Heatmaps of changes one above the other (``{title: rows × columns}``), on one symmetric
    diverging scale; the cell of each row whose ``own`` column is in the matrix is outlined (the
    language's own text or task). Values are written in the cells when ``annotate`` (default: up
    to 12 rows and columns), without leading zeros and with as many decimals as the scale needs
    (``fmt`` gives the most), in a font that stays legible when the figure is printed at a column's
    width: the panels are stacked so that the figure is about a column wide."""
    first = next(iter(panels.values()))
    R, C = first.shape
    annotate = max(R, C) <= 12 if annotate is None else annotate
    values = np.concatenate([m.to_numpy(dtype=float).ravel() for m in panels.values()])
    finite = values[np.isfinite(values)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0  # an all-zero matrix still needs a scale
    most = int(fmt.strip(".f") or 0)
    decimals = min(most, max(1, 1 - math.floor(math.log10(vmax)))) if vmax < 1 else min(most, 2)
    cell = 0.32 if annotate else 0.22  # inches; an annotated cell holds "−.025" at CELL_FONT
    label_room = max(0.5, 0.07 * max(len(str(i)) for i in first.index))
    n = len(panels)
    fig = _figure(cell * C + label_room + 0.9, n * (cell * R + 0.35) + 0.2 + 0.08 * max(len(str(c)) for c in first.columns))
    gs = fig.add_gridspec(n, 2, width_ratios=[1, 0.04], height_ratios=[1] * n)
    cax = fig.add_subplot(gs[:, 1])
    for k, (title, m) in enumerate(panels.items()):
        ax = fig.add_subplot(gs[k, 0])
        vals = m.to_numpy(dtype=float)
        annot = np.vectorize(lambda v: _compact(v, decimals))(vals) if annotate else False
        sns.heatmap(m.astype(float), ax=ax, cmap=cmap, vmin=-vmax, vmax=vmax, square=True,
                    xticklabels=k == n - 1, yticklabels=True, annot=annot, fmt="", annot_kws={"fontsize": CELL_FONT},
                    cbar=k == 0, cbar_ax=cax if k == 0 else None, cbar_kws={"label": cbar_label})
        for i, row in enumerate(m.index):
            if own.get(row) in m.columns:
                ax.add_patch(Rectangle((list(m.columns).index(own[row]), i), 1, 1, fill=False, edgecolor="0.1",
                                       linewidth=0.9))
        ax.set_title(title, fontsize=8, pad=3)
        ax.set_xlabel(xlabel if k == n - 1 else "", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=TICK_FONT, length=2, pad=1)
        ax.tick_params(axis="x", rotation=90)
        ax.tick_params(axis="y", rotation=0)
    cax.tick_params(labelsize=TICK_FONT)
    cax.yaxis.label.set_size(8)
    return fig


def ppl_change_heatmap(df: pd.DataFrame, annotate: bool | None = None) -> Figure:
    """ΔNLL = NLL(neurons off) − NLL(baseline), ablated language × evaluated language, from
    :func:`~.evaluate.perplexity_matrix`; the random control's ΔNLL beside it on the same colour scale.

    The scale is diverging and symmetric around 0 (red: the text got harder to predict); the
    diagonal cells (a language's neurons on its own text) are outlined. Values are written in the
    cells when ``annotate`` (default: up to 12 languages on either axis).
    """
    from ..evaluate import delta_matrix

    panels = {"language neurons off": delta_matrix(df, "intervention")}
    if "control" in set(df["condition"]):
        panels["random neurons off (control)"] = delta_matrix(df, "control")
    return _change_panels(panels, {a: a for a in panels["language neurons off"].index}, annotate, "vlag", ".3f",
                          "evaluated language", "neurons switched off", "ΔNLL (nats per token)")


def task_change_heatmap(frame: pd.DataFrame, metric: str | None = None, annotate: bool | None = None) -> Figure:
    """Rahmanisa et al.'s layout: the change of each task's score from its baseline (task rows,
    labelled with the language they measure) × the language whose neurons were intervened on
    (columns), from :func:`~.tasks.evaluate_tasks`; the random control's change beside it on the
    same symmetric diverging scale (blue: the score rose). Each task is shown at its headline
    metric (:func:`~.tasks.summary.headline_metric`) unless ``metric`` is given; cells where the
    task measures the intervened language are outlined."""
    from ..tasks.summary import change_matrix, headline_metric

    panels = {"intervention": change_matrix(frame, "intervention", metric)}
    if (frame.condition == "control").any():
        panels["random control"] = change_matrix(frame, "control", metric)
    lang = {t: frame.loc[frame.task == t, "language"].iloc[0] for t in panels["intervention"].index}
    metrics = sorted({headline_metric(frame, t, metric) for t in panels["intervention"].index})
    return _change_panels(panels, lang, annotate, "vlag_r", ".2f", "neurons intervened on", "task",
                          f"change from baseline ({', '.join(metrics)})")


def loss_curves(losses: dict[str, list[float]]) -> Figure:
    """Training loss per step of each fine-tuning run (``{run name: [loss, ...]}``)."""
    if not losses or not any(losses.values()):
        raise LangNeuronsError("no losses to draw")
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in losses.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per target token)")
    ax.legend(fontsize=7, frameon=False)
    return fig


def transfer_deltas(table: pd.DataFrame, metric: str = "acc") -> Figure:
    """The change from the base model of each evaluation task (x: its language) for every
    fine-tuning method × condition, with ±1 paired standard error, at ``metric``."""
    t = table[table.metric == metric]
    if t.empty:
        raise LangNeuronsError(f"the transfer table has no metric {metric!r}")
    runs = list(dict.fromkeys(zip(t.method, t.condition)))
    tasks = list(dict.fromkeys(t.task))
    labels = [str(t.loc[t.task == k, "language"].iloc[0] or k) for k in tasks]
    fig = _figure(max(4.5, 0.45 * len(tasks) + 2.5), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(runs)
    for j, (method, condition) in enumerate(runs):
        g = t[(t.method == method) & (t.condition == condition)].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) - 0.4 + width * (j + 0.5)
        ax.errorbar(x, g.delta, yerr=g.delta_stderr.fillna(0), fmt="o", markersize=3, capsize=2, linewidth=0.8,
                    label=method if condition == "none" else f"{method} ({condition})")
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_xticks(range(len(tasks)), labels)
    ax.set_xlabel("evaluation language")
    ax.set_ylabel(f"change from base model ({metric})")
    ax.tick_params(labelsize=TICK_FONT)
    ax.legend(fontsize=6, frameon=False)
    return fig


def _factor_axis(ax, factors: list[float]) -> None:
    """Log x axis over the factors (symlog when one is ≤ 0, e.g. α = 0), ticks at the factors."""
    positive = [f for f in factors if f > 0]
    if len(positive) == len(factors):
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.xaxis.set_major_locator(FixedLocator(factors))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


# The steering figure's four series: one style each, used both to draw them and for the legend
# (tests check that the legend shows exactly the plotted styles). Distinct in colour, line and
# marker, so that each can be told apart in greyscale print too; the fluent rate (never above the
# target rate) is drawn on top with a smaller marker, so where the two coincide both stay visible.
STEER_STYLES = {
    "target": {"color": "#1b4f9c", "linestyle": "-", "marker": "o", "markersize": 4.5, "linewidth": 1.3,
               "zorder": 3, "label": "target language"},
    "fluent": {"color": "#e36c0a", "linestyle": (0, (3, 1.5)), "marker": "s", "markersize": 2.6, "linewidth": 1.1,
               "zorder": 4, "label": "target language and fluent"},
    "control": {"color": "0.45", "linestyle": "-.", "marker": "^", "markersize": 3.2, "linewidth": 1.0,
                "markerfacecolor": "white", "zorder": 2, "label": "random control"},
    "baseline": {"color": "black", "linestyle": ":", "marker": "", "markersize": 0, "linewidth": 1.2,
                 "zorder": 2, "label": "no intervention"},
}
_STEER_COLUMNS = {"target": "target_rate", "fluent": "target_fluent_rate", "control": "control_rate",
                  "baseline": "baseline_rate"}


def _strength_label(mode) -> str:
    return "β, the diffmean strength" if mode == "diffmean" else "factor"


def steer_rate_vs_factor(df: pd.DataFrame, columns: int = 5) -> Figure:
    """Target-language rate against the steering factor (β for diffmean): small multiples, one
    panel per target language (× setting, where the frame has several modes, statistics or
    positions), ``columns`` panels per row, the same axes in every panel.

    ``df`` is a steering frame (:func:`~.evaluate.steer_sweep`, one row per generation) or its
    :func:`~.evaluate.steer_summary`. Each panel: the target-language rate under the intervention
    with its Wilson 95% interval; where the frame has the ``fluent`` column
    (:mod:`~.evaluate.fluency`), the rate of generations in the target language *and* fluent; the
    random control's rate; and the rate without intervention (it does not depend on the factor).
    Styles: :data:`STEER_STYLES`, one legend for the figure.
    """
    from ..evaluate import steer_summary

    summ = df if "target_rate" in df.columns else steer_summary(df)
    need = {"target", "factor", "target_rate"} - set(summ.columns)
    if need:
        raise LangNeuronsError(f"not a steering frame or summary: it lacks the column(s) {sorted(need)}")
    summ = summ.copy()
    keys = [k for k in ("mode", "statistic", "positions") if k in summ.columns]
    for k in keys:  # scale has no statistic: a missing value is its own setting, not dropped
        summ[k] = summ[k].astype(object).where(summ[k].notna(), "–")
    settings = list(summ.groupby(keys, sort=False)) if keys else [((), summ)]
    targets = list(dict.fromkeys(summ["target"]))
    series = [k for k, c in _STEER_COLUMNS.items() if c in summ.columns and not summ[c].isna().all()]
    if len(settings) == 1:  # one setting: the targets' panels wrapped, `columns` to a row
        panels = [(settings[0][0], settings[0][1], t) for t in targets]
        ncols = max(1, min(columns, len(panels)))
        nrows = math.ceil(len(panels) / ncols)
        slots = list(range(len(panels)))
    else:  # several settings: one row per setting, one column per target
        ncols, nrows = len(targets), len(settings)
        panels, slots = [], []
        for i, (key, g) in enumerate(settings):
            for j, t in enumerate(targets):
                if (g["target"] == t).any():
                    panels.append((key, g, t))
                    slots.append(i * ncols + j)
    fig = _figure(1.45 * ncols + 0.5, 1.3 * nrows + 0.75)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    modes = set()
    for slot, (key, g, t) in zip(slots, panels):
        ax = axes[slot]
        key = key if isinstance(key, tuple) else (key,)
        setting = dict(zip(keys, key))
        modes.add(setting.get("mode"))
        r = g[g["target"] == t].sort_values("factor")
        x = r["factor"].to_numpy(dtype=float)
        for name in series:
            style = dict(STEER_STYLES[name], label=None)
            y = r[_STEER_COLUMNS[name]].to_numpy(dtype=float)
            if name == "target" and {"target_low", "target_high"} <= set(r.columns):
                # clipped: float rounding can put a bound a hair inside the rate; matplotlib refuses negative bars
                err = np.clip(np.vstack([y - r["target_low"], r["target_high"] - y]), 0, None)
                bars = ax.errorbar(x, y, yerr=err, elinewidth=0.7, capsize=1.5, ecolor=style["color"], **style)
                bars.lines[0].set_gid(name)  # the data line (not its caps): what the legend entry shows
            else:
                ax.plot(x, y, gid=name, **style)
        if len(settings) == 1 or slot < ncols:
            ax.set_title(t, fontsize=8, pad=2)
        if len(settings) > 1 and slot % ncols == 0:  # the row's setting, left of its first panel
            ax.set_ylabel("\n".join(str(v) for v in key if v != "–"), fontsize=7)
        _factor_axis(ax, sorted(set(float(f) for f in summ["factor"])))
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_locator(FixedLocator([0, 0.5, 1]))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.tick_params(labelsize=TICK_FONT, pad=1)
        ax.grid(axis="y", color="0.9", linewidth=0.5)
        sns.despine(ax=ax)
    used = set(slots)
    for i, ax in enumerate(axes):
        if i not in used:
            ax.set_visible(False)
        elif i + ncols >= len(axes) or i + ncols not in used:  # nothing below: its own factor labels
            ax.xaxis.set_tick_params(labelbottom=True)
    mode = modes.pop() if len(modes) == 1 else None
    xlabel = _strength_label(mode)
    if len(settings) == 1 and keys:  # the one setting, said once under the panels
        key = settings[0][0] if isinstance(settings[0][0], tuple) else (settings[0][0],)
        what = ", ".join(f"{k} {v}" for k, v in zip(keys, key) if v != "–" and not (k == "mode" and v == "diffmean"))
        xlabel += f" ({what})" if what else ""
    fig.supxlabel(xlabel, fontsize=8)
    fig.supylabel("share of generations", fontsize=8)
    handles = [Line2D([], [], **STEER_STYLES[name]) for name in series]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=7, frameon=False,
               handlelength=2.6, columnspacing=1.2)
    return fig


def save_figure(fig: Figure, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.png`` (200 dpi) and ``<name>.pdf``, each atomically; returns both paths."""
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise LangNeuronsError(f"figure name must be a plain file name without extension, got {name!r}")
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, kwargs in (("png", {"dpi": 200}), ("pdf", {})):
        final = d / f"{name}.{ext}"
        tmp = d / f".{name}.{ext}.tmp"
        # tight bounding box: keeps legends placed outside the axes (clustermap) in the file
        fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)
        os.replace(tmp, final)
        paths.append(final)
    return paths[0], paths[1]
