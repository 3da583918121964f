"""The method comparison's figure and files (:mod:`tl_langneurons.compare`)."""

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure



def _figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (as :mod:`.plot` builds its figures)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


METHOD_COLOURS = {"lape": "#1f77b4", "ap": "#2ca02c", "threshold": "#7f7f7f", "plnd": "#d62728"}


def comparison_figure(effect: pd.DataFrame, overlap: pd.DataFrame, sets: dict) -> Figure:
    """Three panels: own-language ΔNLL per switched-off neuron by method and language (the random
    control as open markers), mean Jaccard between methods' sets, and each method's layer placement."""
    methods = list(dict.fromkeys(effect["method"]))
    langs = list(dict.fromkeys(effect["language"]))
    fig = _figure(13.0, 3.8)
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.6, 1, 1.3]})
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(langs))
    for i, m in enumerate(methods):
        sub = effect[effect.method == m].set_index("language").reindex(langs)
        ax1.bar(x + i * width, sub["delta_nll_per_neuron"], width, color=METHOD_COLOURS.get(m), label=m)
        ax1.scatter(x + i * width, sub["control_delta_nll_per_neuron"], s=12, facecolors="none",
                    edgecolors="black", lw=0.6, zorder=3, label="random control" if i == 0 else None)
    ax1.set_xticks(x + width * (len(methods) - 1) / 2, langs, fontsize=8)
    ax1.set_ylabel("own-language ΔNLL per neuron (nats)", fontsize=8)
    ax1.axhline(0, color="black", lw=0.5)
    ax1.legend(fontsize=7, frameon=False)
    mat = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    for r in overlap.groupby(["method_a", "method_b"])["jaccard"].mean().reset_index().itertuples():
        mat.loc[r.method_a, r.method_b] = mat.loc[r.method_b, r.method_a] = r.jaccard
    im = ax2.imshow(mat.values, vmin=0, vmax=1, cmap="viridis")
    ax2.set_xticks(range(len(methods)), methods, fontsize=8, rotation=30)
    ax2.set_yticks(range(len(methods)), methods, fontsize=8)
    for i in range(len(methods)):
        for j in range(len(methods)):
            v = mat.values[i, j]
            ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    ax2.set_title("mean Jaccard over languages", fontsize=8)
    fig.colorbar(im, ax=ax2, shrink=0.8)
    for m in methods:
        nset = sets[m]
        counts = np.zeros(nset.n_layers)
        for lang in nset.languages:
            for layer, j in nset.neurons[lang]:
                counts[layer] += 1
        ax3.plot(range(nset.n_layers), counts / max(1, counts.sum()), marker="o", ms=3,
                 color=METHOD_COLOURS.get(m), label=m)
    ax3.set_xlabel("layer", fontsize=8)
    ax3.set_ylabel("share of the method's neurons", fontsize=8)
    ax3.legend(fontsize=7, frameon=False)
    for ax in (ax1, ax3):
        ax.tick_params(labelsize=7)
    return fig


def write_comparison(out, sets: dict, overlap: pd.DataFrame, overlap_layers: pd.DataFrame, ppl: pd.DataFrame,
                     effect: pd.DataFrame, table: pd.DataFrame, cloze: pd.DataFrame | None = None,
                     meta: dict | None = None) -> list:
    """``sets/<method>.json``, ``overlap.csv``, ``overlap_layers.csv``, ``ppl.csv`` (every method's
    matrix), ``effect.csv`` (per method × language), ``methods.csv`` (the one table), ``cloze.csv``
    (where measured), ``summary.json`` and the ``compare_methods`` figure."""
    from .._io import make_out_dir, write_csv, write_json
    from .plot import save_figure

    d = make_out_dir(out)
    (d / "sets").mkdir(exist_ok=True)
    paths = [nset.save(d / "sets" / f"{m}.json") for m, nset in sets.items()]
    paths += [write_csv(overlap, d / "overlap.csv"), write_csv(overlap_layers, d / "overlap_layers.csv"),
              write_csv(ppl, d / "ppl.csv"), write_csv(effect, d / "effect.csv"), write_csv(table, d / "methods.csv")]
    if cloze is not None:
        paths.append(write_csv(cloze, d / "cloze.csv"))
    summary = {"methods": table.to_dict(orient="records"), **(meta or {})}
    paths.append(write_json(d / "summary.json", summary))
    paths.extend(save_figure(comparison_figure(effect, overlap, sets), d, "compare_methods"))
    return paths
