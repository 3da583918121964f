"""The steering benchmark's files and figure (computes nothing beyond :mod:`..steerbench.summary`).

``write_steer_bench(result, out)`` writes:

* ``leaderboard.csv`` — method × target (and ``all``): ``method, family, target, strength, layer,
  n, target_rate, fluent_rate, relevance, score`` with their intervals, ``score_raw``,
  ``relevance_unsteered`` and the random control's ``control_*``;
* ``generations.csv`` — every evaluation generation (prompt, reference, output, language,
  fluency, relevance), both conditions;
* ``tuning.csv`` — every setting tried on the tuning prompts and which was chosen;
* ``calibration.csv`` — the judge's separation of translations from random pairs per language;
* ``summary.json`` — the pooled leaderboard, the winner, the fluency and calibration settings, the run;
* ``figures/steer_bench_scatter.png|pdf`` — forcing (fluent target-language rate) against meaning
  (relevance), one panel per target and the pooled one, each method's random control hollow.
"""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import make_out_dir, write_csv, write_json
from ..steerbench.summary import leaderboard


def scatter(board: pd.DataFrame):
    from matplotlib.lines import Line2D

    from .plot import _figure

    targets = [t for t in board["target"].unique() if t != "all"] + ["all"]
    methods = list(dict.fromkeys(board["method"]))
    cols = min(3, len(targets))
    rows = math.ceil(len(targets) / cols)
    fig = _figure(3.0 * cols + 1.6, 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = __import__("matplotlib").colormaps["tab20"]
    colour = {m: cmap(i % 20) for i, m in enumerate(methods)}
    marker = {"none": "X", "prompting": "s", "neurons": "o", "directions": "^", "sae": "D"}
    for ax, t in zip(axes, targets):
        sub = board[board.target == t]
        for r in sub.itertuples():
            ax.scatter(r.relevance, r.fluent_rate, color=colour[r.method], marker=marker.get(r.family, "o"), s=36,
                       zorder=3, edgecolors="black", linewidths=0.4)
            if t == "all" and not (pd.isna(r.relevance_low) or pd.isna(r.fluent_low)):
                ax.errorbar(r.relevance, r.fluent_rate, xerr=[[r.relevance - r.relevance_low],
                                                              [r.relevance_high - r.relevance]],
                            yerr=[[r.fluent_rate - r.fluent_low], [r.fluent_high - r.fluent_rate]],
                            color=colour[r.method], lw=0.7, zorder=2)
            c_rel, c_fl = getattr(r, "control_relevance", np.nan), getattr(r, "control_fluent_rate", np.nan)
            if not (pd.isna(c_rel) or pd.isna(c_fl)):
                ax.scatter(c_rel, c_fl, facecolors="none", edgecolors=colour[r.method],
                           marker=marker.get(r.family, "o"), s=30, linewidths=1.0, zorder=3)
        ax.set_title("pooled over targets" if t == "all" else f"into {t}", fontsize=9)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, lw=0.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("relevance to the prompt (0 random, 1 translation)", fontsize=7)
        ax.set_ylabel("fluent target-language rate", fontsize=7)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    handles = [Line2D([], [], ls="", marker=marker.get(board[board.method == m]["family"].iloc[0], "o"),
                      color=colour[m], markeredgecolor="black", markeredgewidth=0.4, label=m) for m in methods]
    handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="grey",
                          label="random control (hollow)"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    return fig


def write_steer_bench(result, out_dir: str | os.PathLike, n_boot: int = 1000) -> dict:
    from .plot import save_figure

    d = make_out_dir(out_dir)
    board = leaderboard(result.generations, n_boot=n_boot, seed=int(result.run.get("seed", 0)))
    files = [write_csv(board, d / "leaderboard.csv"), write_csv(result.generations, d / "generations.csv"),
             write_csv(result.tuning, d / "tuning.csv"),
             write_csv(pd.DataFrame(result.calibration.table), d / "calibration.csv")]
    files += save_figure(scatter(board), d / "figures", "steer_bench_scatter")
    pooled = board[board.target == "all"]
    keep = ["method", "family", "target_rate", "fluent_rate", "relevance", "score", "score_low", "score_high",
            "control_fluent_rate", "control_relevance", "control_score"]
    summary = {"leaderboard": pooled[[c for c in keep if c in pooled.columns]].to_dict("records"),
               "winner": pooled["method"].iloc[0] if len(pooled) and not pooled["score"].isna().all() else None,
               "score": "harmonic mean of the fluent target-language rate and the mean relevance",
               "calibration": result.calibration.as_dict(), "fluency": result.fluency.as_dict(),
               "run": result.run}
    summary["files"] = [os.path.relpath(p, d) for p in files] + ["summary.json"]
    write_json(Path(d) / "summary.json", summary)
    return summary
