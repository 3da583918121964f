"""Write the measurements of :mod:`.evaluate` into a folder: a tidy CSV, ``summary.json`` and figures.

What ``tl-langneurons ppl``, ``steer``, ``lss`` and the demo write, one writer per measurement, so
that every entry point writes the same files under the same names (the neuron-set analysis has its
own writers in :mod:`.report`):

* :func:`write_ppl` — ``ppl.csv`` (one row per ablated × evaluated language × condition:
  ``ablated, evaluated, condition, nll, ppl, n_tokens``), ``summary.json`` (Tang's headline
  numbers, and per ablated language its own ΔNLL against the other languages' and the control's),
  figure ``ppl_change`` (ΔNLL heatmap with the control's beside it);
* :func:`write_steer` — ``steer.csv`` (every generation: ``target, condition, prompt, generation,
  detected``, then the rest of :func:`~.evaluate.steer`'s columns), ``summary.json`` (rates with
  Wilson intervals per target, per grid cell of a sweep, and their mean over targets), figure
  ``steer_rate_vs_factor`` for a factor sweep;
* :func:`write_lss` — ``lss.csv`` (one row per item × condition) and ``summary.json``;
* :func:`write_tasks` — ``tasks.csv`` (:attr:`~.tasks.TaskRun.frame`), ``summary.json``
  (:func:`~.tasks.summary.tasks_summary`), lm-eval's per-sample log under ``samples/``, figure
  ``tasks_change`` (change from baseline, task × intervened language, the control beside it).

Each returns the summary it wrote (strict JSON: NaN and infinities are ``null``). ``run`` is an
optional dict of the settings that produced the frame (model, corpus, decoding…), stored as is.
"""

import math
import os
from pathlib import Path

import pandas as pd

from .. import evaluate as ev
from .._io import jsonable, make_out_dir, write_csv, write_json
from ..errors import LangNeuronsError, choices

PPL_COLUMNS = ["ablated", "evaluated", "condition", "nll", "ppl", "n_tokens"]
STEER_FIRST = ["target", "condition", "prompt", "generation", "detected"]
STEER_CELL = ("mode", "factor", "statistic", "positions")  # what varies across a sweep's grid cells
_RATES = ("target", "baseline", "control")  # steer_summary's column prefixes


def _missing(df, columns, what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise LangNeuronsError(f"expected a {what} DataFrame, got {type(df).__name__}")
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        raise LangNeuronsError(f"not a {what} frame: it lacks the column(s) {choices(lacking)}")
    if df.empty:
        raise LangNeuronsError(f"the {what} frame has no rows")


def _write_summary(d: Path, summary: dict) -> dict:
    summary = jsonable(summary)
    write_json(d / "summary.json", summary)
    return summary


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else math.nan


# ---------------------------------------------------------------------------------------------
# Perplexity matrix


def _check_ppl(df: pd.DataFrame) -> None:
    """One row per ablated × evaluated × condition, every cell present: the CSV's promise."""
    _missing(df, PPL_COLUMNS, "perplexity-matrix")
    conds = list(dict.fromkeys(df["condition"]))
    bad = [c for c in conds if c not in ev.CONDITIONS]
    if bad:
        raise LangNeuronsError(f"unknown condition {bad[0]!r}; allowed: {choices(ev.CONDITIONS)}")
    for need in ("baseline", "intervention"):
        if need not in conds:
            raise LangNeuronsError(f"the perplexity-matrix frame has no {need!r} rows")
    dup = df.duplicated(["ablated", "evaluated", "condition"])
    if dup.any():
        r = df[dup].iloc[0]
        raise LangNeuronsError(f"the perplexity-matrix frame has more than one row for ablated {r.ablated!r}, "
                               f"evaluated {r.evaluated!r}, condition {r.condition!r}")
    n_a, n_e = df["ablated"].nunique(), df["evaluated"].nunique()
    if len(df) != n_a * n_e * len(conds):
        raise LangNeuronsError(f"the perplexity-matrix frame is incomplete: {len(df)} rows, expected "
                               f"{n_a} ablated × {n_e} evaluated × {len(conds)} conditions = {n_a * n_e * len(conds)}")


def write_ppl(df: pd.DataFrame, out_dir: str | os.PathLike, run: dict | None = None,
              figures_dir: str | os.PathLike | None = None) -> dict:
    """Write a :func:`~.evaluate.perplexity_matrix` frame: ``ppl.csv``, ``summary.json`` and the
    figure ``ppl_change`` (PNG + PDF, into ``figures_dir``, default ``out_dir``); return the summary.

    ``summary.json`` holds :func:`~.evaluate.perplexity_summary` (mean diagonal and off-diagonal
    ΔNLL, the control's, their ratios, the share of rows whose own language is the most hurt),
    ``per_language`` (:func:`~.evaluate.per_language`), the languages, conditions and ``run``.
    """
    from . import plot  # matplotlib: only when figures are drawn

    _check_ppl(df)
    d = make_out_dir(out_dir)
    table = df[PPL_COLUMNS]
    files = [write_csv(table, d / "ppl.csv")]
    summary = ev.perplexity_summary(df)
    summary["per_language"] = ev.per_language(df)
    summary["ablated"] = [str(x) for x in dict.fromkeys(df["ablated"])]
    summary["evaluated"] = [str(x) for x in dict.fromkeys(df["evaluated"])]
    summary["conditions"] = [c for c in ev.CONDITIONS if c in set(df["condition"])]
    summary["run"] = run
    fig_dir = d if figures_dir is None else make_out_dir(figures_dir)
    files += plot.save_figure(plot.ppl_change_heatmap(df), fig_dir, "ppl_change")
    summary["files"] = [os.path.relpath(p, d) for p in files] + ["summary.json"]
    return _write_summary(d, summary)


# ---------------------------------------------------------------------------------------------
# Steering


def _cell_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in STEER_CELL if k in df.columns]


def _target_entry(row) -> dict:
    out = {"n": int(row["n"])}
    for name in _RATES:
        for part in ("rate", "low", "high", "fluent_rate", "fluent_low", "fluent_high", "nll", "rep"):
            col = f"{name}_{part}"
            if col in row.index and not pd.isna(row[col]):
                out[col] = float(row[col])
    return out


def _mean_entry(rows: pd.DataFrame) -> dict:
    """Mean rate over targets and, for each condition, the Wilson interval of the pooled
    generations; the same for the fluent target-language rate, and the mean NLL and repetition,
    where the frame has them."""
    out: dict = {"n_targets": int(len(rows))}
    for name in _RATES:
        for rate, pooled in (("rate", name), ("fluent_rate", f"{name}_fluent")):
            col = f"{name}_{rate}"
            if col not in rows.columns or rows[col].isna().all():
                continue
            r = rows.dropna(subset=[col])
            k = int(sum(round(p * n) for p, n in zip(r[col], r["n"])))
            lo, hi = ev.wilson(k, int(r["n"].sum()))
            out[col], out[f"pooled_{pooled}_low"], out[f"pooled_{pooled}_high"] = float(r[col].mean()), lo, hi
        for m in ("nll", "rep"):
            col = f"{name}_{m}"
            if col in rows.columns and not rows[col].isna().all():
                out[col] = float(rows[col].mean())
    return out


def steer_cells(df: pd.DataFrame) -> list[dict]:
    """The grid cells of a steering frame (one for a single setting), each ``{mode, factor,
    statistic, positions, targets: {target: rates and intervals}, mean: {...}}``."""
    summ = ev.steer_summary(df)
    keys = _cell_keys(summ)
    groups = summ.groupby(keys, sort=False, dropna=False) if keys else [((), summ)]
    cells = []
    for key, g in groups:
        cell = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        cell["targets"] = {str(r["target"]): _target_entry(r) for _, r in g.iterrows()}
        cell["mean"] = _mean_entry(g)
        cells.append(cell)
    return cells


def write_steer(df: pd.DataFrame, out_dir: str | os.PathLike, run: dict | None = None,
                figures_dir: str | os.PathLike | None = None) -> dict:
    """Write a :func:`~.evaluate.steer` / :func:`~.evaluate.steer_sweep` frame: ``steer.csv``,
    ``summary.json`` and, for a sweep, the figure ``steer_rate_vs_factor``; return the summary.

    ``summary.json``: ``cells`` — every grid cell (mode, factor, statistic, positions: those of
    them the frame has; :func:`~.evaluate.steer_with` frames have only positions) with, per
    target, ``n`` and ``target_rate``, ``baseline_rate``, ``control_rate`` with their Wilson 95%
    intervals (``*_low``, ``*_high``), and their ``mean`` over targets (plus the Wilson interval
    of the pooled generations); where the frame has the fluency columns also ``*_nll``, ``*_rep``
    and, with ``fluent``, ``*_fluent_rate`` (:func:`~.evaluate.steer_summary`). ``settings``,
    ``targets`` and ``mean`` at the top level are those of the only cell or, for a sweep, of the
    cell with the highest mean fluent target-language rate (the target rate where the frame has no
    ``fluent`` column): ``best`` says which.
    """
    _missing(df, STEER_FIRST, "steering")
    d = make_out_dir(out_dir)
    table = df[STEER_FIRST + [c for c in df.columns if c not in STEER_FIRST]]
    files = [write_csv(table, d / "steer.csv")]
    cells = steer_cells(df)
    sweep = len(cells) > 1
    # chosen by the fluent target-language rate where the frame has it (a degenerate loop in the
    # target's script must not win), else the target rate; ties go to the first cell in the frame's order
    by = "target_fluent_rate" if "fluent" in df.columns else "target_rate"
    best = cells[max(range(len(cells)), key=lambda i: (cells[i]["mean"].get(by, -1.0), -i))]
    summary = {
        "sweep": sweep,
        "settings": {k: best[k] for k in STEER_CELL if k in best},
        "targets": best["targets"],
        "mean": best["mean"],
        "best": (f"the cell with the highest mean {by.replace('_', ' ')}" if sweep else None),
        "cells": cells,
        "conditions": [c for c in ev.CONDITIONS if c in set(df["condition"])],
        "n_generations": int(len(df)),
        "run": run,
    }
    if sweep and "factor" in df.columns:  # frames of hand-built interventions (steer_with) have no factor
        from . import plot  # matplotlib: only when figures are drawn

        fig_dir = d if figures_dir is None else make_out_dir(figures_dir)
        files += plot.save_figure(plot.steer_rate_vs_factor(df), fig_dir, "steer_rate_vs_factor")
    summary["files"] = [os.path.relpath(p, d) for p in files] + ["summary.json"]
    return _write_summary(d, summary)


# ---------------------------------------------------------------------------------------------
# LSS


def write_lss(df: pd.DataFrame, out_dir: str | os.PathLike, run: dict | None = None) -> dict:
    """Write an :func:`~.evaluate.lss` frame: ``lss.csv`` and ``summary.json``; return the summary.

    ``summary.json``: ``pairs`` — per source × target (× mode, factor), for the intervention and
    the control, LSS (the fraction of items whose Δ rose) with its Wilson 95% interval, the number
    of items and the mean change of Δ (:func:`~.evaluate.lss_summary`).
    """
    _missing(df, ["item", "source", "target", "condition", "shifted", "delta", "delta_baseline"], "LSS")
    summ = ev.lss_summary(df)
    d = make_out_dir(out_dir)
    files = [write_csv(df, d / "lss.csv")]
    keys = [k for k in ("source", "target", "mode", "factor") if k in summ.columns]
    pairs = []
    for key, g in summ.groupby(keys, sort=False, dropna=False):
        pair = dict(zip(keys, key))
        for r in g.to_dict("records"):
            pair[r["condition"]] = {k: r[k] for k in ("lss", "low", "high", "n_items", "mean_delta_shift")}
        pairs.append(pair)
    summary = {"pairs": pairs, "n_items": int(df["item"].nunique()),
               "conditions": [c for c in ev.CONDITIONS if c in set(df["condition"])], "run": run}
    summary["files"] = [p.name for p in files] + ["summary.json"]
    return _write_summary(d, summary)


# ---------------------------------------------------------------------------------------------
# Downstream tasks


def write_tasks(task_run, out_dir: str | os.PathLike, run: dict | None = None, metric: str | None = None) -> dict:
    """Write a :class:`~.tasks.TaskRun`: ``tasks.csv``, ``summary.json`` (with lm-eval's task
    versions and, for translation tasks, the sacreBLEU signatures), ``samples/…jsonl`` and, when
    an intervention ran, the ``tasks_change`` figure; return the summary."""
    from ..tasks import write_samples
    from ..tasks.summary import tasks_summary

    _missing(task_run.frame, ["task", "condition", "metric", "value"], "tasks")
    d = make_out_dir(out_dir)
    files = [write_csv(task_run.frame, d / "tasks.csv")]
    summary = tasks_summary(task_run.frame, metric, task_run.samples)
    summary["versions"] = task_run.versions
    summary["signatures"] = getattr(task_run, "signatures", None) or {}
    summary["run"] = run
    files += write_samples(task_run, d / "samples")
    if (task_run.frame.condition == "intervention").any():
        from . import plot

        files += plot.save_figure(plot.task_change_heatmap(task_run.frame, metric), d, "tasks_change")
    summary["files"] = [os.path.relpath(p, d) for p in files] + ["summary.json"]
    return _write_summary(d, summary)


# ---------------------------------------------------------------------------------------------
# Fine-tuning and transfer


def write_transfer(table: pd.DataFrame, losses: dict, out_dir: str | os.PathLike, run: dict | None = None,
                   source: str | None = None, metric: str = "acc") -> dict:
    """Write a fine-tuning transfer table: ``transfer.csv``, ``summary.json``
    (:func:`~.finetune.transfer.transfer_summary` and the final training losses) and the figures
    ``loss`` and ``transfer`` (change from the base model per evaluation language); return the summary."""
    from ..finetune.transfer import transfer_summary
    from . import plot

    _missing(table, ["method", "condition", "task", "metric", "delta"], "transfer")
    d = make_out_dir(out_dir)
    files = [write_csv(table, d / "transfer.csv")]
    summary = {"by_run": transfer_summary(table, source, metric), "metric": metric, "source": source,
               "final_loss": {k: v[-1] for k, v in losses.items() if v},
               "first_loss": {k: v[0] for k, v in losses.items() if v}, "run": run}
    files += plot.save_figure(plot.loss_curves(losses), d, "loss")
    files += plot.save_figure(plot.transfer_deltas(table, metric), d, "transfer")
    summary["files"] = [os.path.relpath(p, d) for p in files] + ["summary.json"]
    return _write_summary(d, summary)
