"""The latent-language figure in Wendler et al.'s layout (ACL 2024, their Fig. 2): per task and
target language, the probability of the correct target-language token and of its English
counterpart at every layer, means with shaded 95% intervals; an intervention's curves dashed."""

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..errors import LangNeuronsError


def _figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, without pyplot (as :mod:`.plot` builds its figures)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


COLOURS = {"target": "#1f77b4", "english": "#ff7f0e"}
STYLES = {"baseline": "-", "own_neurons_off": "--", "random_neurons_off": ":"}


def lens_figure(summary: pd.DataFrame) -> Figure:
    """One panel per task (rows) × language (columns) from :attr:`LensResult.summary`."""
    need = {"task", "language", "layer", "condition", "n_items", "p_target", "p_english"}
    if need - set(summary.columns):
        raise LangNeuronsError(f"not a lens summary: it lacks {sorted(need - set(summary.columns))}")
    tasks = list(dict.fromkeys(summary["task"]))
    langs = list(dict.fromkeys(summary["language"]))
    fig = _figure(2.1 * len(langs) + 0.8, 1.8 * len(tasks) + 0.6)
    axes = fig.subplots(len(tasks), len(langs), squeeze=False, sharex=True, sharey=True)
    for r, task in enumerate(tasks):
        for c, lang in enumerate(langs):
            ax = axes[r][c]
            sub = summary[(summary["task"] == task) & (summary["language"] == lang)]
            n = int(sub[sub["condition"] == "baseline"]["n_items"].max()) if len(sub) else 0
            for cond, g in sub.groupby("condition", sort=False):
                g = g.sort_values("layer")
                for what in ("target", "english"):
                    ax.plot(g["layer"], g[f"p_{what}"], STYLES.get(cond, "-."), color=COLOURS[what], lw=1.2)
                    if cond == "baseline":
                        ax.fill_between(g["layer"], g[f"p_{what}_lo"].clip(lower=0), g[f"p_{what}_hi"],
                                        color=COLOURS[what], alpha=0.2, lw=0)
            ax.set_title(f"{task}: {lang} (n={n})", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(tasks) - 1:
                ax.set_xlabel("layer", fontsize=8)
            if c == 0:
                ax.set_ylabel("probability", fontsize=8)
    handles = [Line2D([], [], color=COLOURS["target"], label="target language"),
               Line2D([], [], color=COLOURS["english"], label="English")]
    handles += [Line2D([], [], color="grey", ls=STYLES[k], label=k.replace("_", " "))
                for k in STYLES if k in set(summary["condition"])]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    return fig


def write_lens(result, out) -> list:
    """``lens.csv`` (the summary: one row per task × language × layer × condition), ``lens_items.csv``
    (every item's probabilities), ``summary.json`` (items per task and language before and after the
    filters) and the ``lens`` figure (PNG, PDF) into ``out``."""
    from .._io import make_out_dir, write_csv, write_json
    from .plot import save_figure

    d = make_out_dir(out)
    paths = [write_csv(result.summary, d / "lens.csv"), write_csv(result.items, d / "lens_items.csv"),
             write_json(d / "summary.json", {"counts": result.counts, **result.meta})]
    paths.extend(save_figure(lens_figure(result.summary), d, "lens"))
    return paths
