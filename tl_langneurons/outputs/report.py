"""The one-page report of a pipeline run: ``report.md`` with the figures and tables of an output directory.

It reads what the pipeline wrote (never recomputes a measurement from the model), so a report can
be rebuilt from a finished directory at any time:

* ``summary.json`` — the run (model, languages, tokens, neuron-set parameters);
* ``analysis/summary.json`` and ``figures/*.png`` — identification and analysis;
* ``ppl/ppl.csv`` and ``ppl/ppl_change.png`` — the deactivation matrix with its random control;
* ``steer/steer.csv`` and ``steer/steer_rate_vs_factor.png`` — steering generations;
* ``steer_diffmean/`` — the same for residual difference-of-means steering, the baseline method.
* ``steer_bench/leaderboard.csv`` and its scatter — every steering method on forcing, fluency and
  meaning (:mod:`..steerbench`).

Sections whose files are missing are left out. Rates and ΔNLLs are computed from the CSVs with the
package's own summaries, so the report and the CSVs cannot disagree.
"""

import json
import math
import os
from pathlib import Path

import pandas as pd

from .._io import atomic_write_text
from ..errors import LangNeuronsError
from ..identify.methods import method_of

REPORT_NAME = "report.md"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _setting(v) -> str:
    """A setting (mode, factor, ...) as written on the command line: 16, not 16.000."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list]) -> str:
    """A Markdown pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _figure(d: Path, rel: str, caption: str) -> str | None:
    return f"![{caption}]({rel})\n\n*{caption}*" if (d / rel).is_file() else None


def ppl_table(ppl: pd.DataFrame) -> pd.DataFrame:
    """Per ablated language: ΔNLL of its own language, the mean ΔNLL of the others, the control's own
    ΔNLL and whether the own language is the most hurt — :func:`~tl_langneurons.evaluate.per_language`,
    the definition ``summary.json`` uses, so the page never contradicts it (ties included).

    ``ppl`` has the columns of ``ppl.csv`` (``ablated, evaluated, condition, nll, ...``).
    """
    from ..evaluate import per_language

    need = {"ablated", "evaluated", "condition", "nll"}
    if not need <= set(ppl.columns):
        raise LangNeuronsError(f"not a ppl.csv frame: it lacks {sorted(need - set(ppl.columns))}")
    rows = [{"ablated": a, "own_delta": r["delta_nll"], "others_delta": r["offdiag_delta_nll"],
             "control_own_delta": r["control_delta_nll"], "own_most_hurt": bool(r["most_hurt"])}
            for a, r in per_language(ppl).items()]
    return pd.DataFrame(rows)


def _ppl_section(d: Path) -> list[str]:
    csv = d / "ppl" / "ppl.csv"
    if not csv.is_file():
        return []
    t = ppl_table(pd.read_csv(csv, keep_default_na=False, na_values=[""]))
    own, oth, ctl = t.own_delta.mean(), t.others_delta.mean(), t.control_own_delta.mean()
    ratio = lambda a, b: a / b if b and b > 0 else math.nan  # noqa: E731
    out = ["## Switching neurons off: perplexity",
           "Each row switches off one language's neurons (set to 0) and measures the mean NLL per token "
           "of every language's held-out text, on exactly the same tokens as without the intervention; "
           "the control switches off as many random neurons per layer.",
           _table(["ablated", "ΔNLL own", "ΔNLL others (mean)", "ΔNLL own, control", "own most hurt"],
                  [[r.ablated, r.own_delta, r.others_delta, r.control_own_delta, "yes" if r.own_most_hurt else "no"]
                   for r in t.itertuples()]),
           f"Mean own ΔNLL **{_fmt(own)}** nats; {_fmt(ratio(own, oth), 1)}× the other languages' and "
           f"{_fmt(ratio(own, ctl), 1)}× the control's; the own language is the most hurt in "
           f"{int(t.own_most_hurt.sum())} of {len(t)} rows."]
    fig = _figure(d, "ppl/ppl_change.png", "ΔNLL (nats/token) when each language's neurons are switched off "
                  "(top) and as many random neurons per layer (bottom, the control); outlined: a language's own text")
    return out + ([fig] if fig else [])


# The two steering sections: neurons (steer/) and the residual diffmean baseline (steer_diffmean/)
_STEERING = {
    "steer": ("Switching neurons on: steering the output language",
              "Generations under the intervention on the target's neurons", "on random neurons (control)"),
    "steer_diffmean": ("The baseline: residual-stream difference-of-means steering",
                       "Generations with β × (the target's mean residual − the other languages') added after "
                       "one block at every position", "with a random direction of the same norm (control)"),
}


def _steer_section(d: Path, sub: str = "steer") -> list[str]:
    from ..evaluate import steer_summary

    csv = d / sub / "steer.csv"
    if not csv.is_file():
        return []
    title, what, control = _STEERING[sub]
    strength = "β" if sub == "steer_diffmean" else "factor"  # diffmean's strength is β, not a factor
    name_of = lambda k: strength if k == "factor" else k  # noqa: E731
    df = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    s = steer_summary(df)
    fluent = "target_fluent_rate" in s.columns
    by = "target_fluent_rate" if fluent else "target_rate"
    if "layer" in df.columns:
        what = what.replace("after one block", f"after block {int(df['layer'].iloc[0])}")
    out = [f"## {title}"]
    extra = [c for c in ("target_fluent_rate", "target_nll", "target_rep") if c in s.columns]
    names = {"target_fluent_rate": "fluent target rate", "target_nll": "NLL", "target_rep": "rep-4"}
    cells = [k for k in ("mode", "factor", "statistic", "positions") if k in s.columns and s[k].nunique() > 1]
    if cells:  # a sweep: one line per grid cell, then the per-language table of the best cell
        cols = ["target_rate"] + extra + [c for c in ("baseline_rate", "control_rate") if c in s.columns]
        g = s.groupby(cells, sort=True)[cols].mean().reset_index()
        out.append("Mean over the targets, per setting" + (" (NLL: mean NLL per token of the generations under the "
                   "unsteered model; rep-4: share of repeated token 4-grams)" if fluent else "") + ":")
        out.append(_table([name_of(c) for c in cells] + [{"target_rate": "target rate", "baseline_rate": "baseline",
                                    "control_rate": "control"}.get(c, names.get(c, c)) for c in cols],
                          [[_setting(v) for v in r[:len(cells)]] + list(r[len(cells):])
                           for r in g.itertuples(index=False)]))
        best = g.loc[g[by].idxmax()]
        keep = (s[cells] == best[cells]).all(axis=1)
        s = s[keep]
        out.append(f"Per target language at the best setting by {names.get(by, 'target rate')} (" +
                   ", ".join(f"{name_of(k)} {_setting(best[k])}" for k in cells) + "):")
    setting = {k: s[k].iloc[0] for k in ("mode", "factor", "statistic", "positions") if k in s.columns}
    if sub == "steer_diffmean":
        setting.pop("mode", None)  # "diffmean", said by the section
    out.append(f"{what} (" +
               ", ".join(f"{name_of(k)} {_setting(v)}" for k, v in setting.items()
                         if isinstance(v, str) or not pd.isna(v)) +
               f"), without it (baseline) and {control}; the language of the continuation "
               "is identified offline; 95% Wilson intervals." +
               (" A generation counts as *fluent* when its repeated-4-gram share is at most the limit and its "
                "NLL under the unsteered model at most the 95th percentile of human text of its language "
                "(summary.json, `fluency`): the fluent target rate counts generations in the target "
                "language that are fluent." if fluent else ""))
    iv = lambda r, c: f"{r[c + '_rate']:.2f} [{r[c + '_low']:.2f}, {r[c + '_high']:.2f}]"  # noqa: E731
    cols = [c for c in ("target", "target_fluent", "baseline", "control") if f"{c}_rate" in s.columns]
    means = [c for c in ("target_nll", "target_rep") if c in s.columns]
    heads = {"target": "target rate", "target_fluent": "fluent target rate"}
    out.append(_table(["target", "n"] + [heads.get(c, c) for c in cols] + [names[c] for c in means],
                      [[r["target"], int(r["n"])] + [iv(r, c) for c in cols] + [f"{r[c]:.2f}" for c in means]
                       for _, r in s.iterrows()]))
    out.append("Mean: " + ", ".join(f"{heads.get(c, c)} {s[c + '_rate'].mean():.2f}" for c in cols) + ".")
    fig = _figure(d, f"{sub}/steer_rate_vs_factor.png", f"Target-language rate against {strength}, one panel per "
                  "target language: under the intervention (95% Wilson interval), fluent only, under the random "
                  "control and without intervention")
    return out + ([fig] if fig else [])


def _steer_bench_section(d: Path) -> list[str]:
    csv = d / "steer_bench" / "leaderboard.csv"
    if not csv.is_file():
        return []
    board = pd.read_csv(csv)
    pooled = board[board.target == "all"]
    targets = [t for t in board.target.unique() if t != "all"]
    n = int(pooled["n"].iloc[0]) if len(pooled) else 0
    run = (_read_json(d / "steer_bench" / "summary.json") or {}).get("run", {})
    prompts = "whole questions" if run.get("prompt_kind") == "questions" else "sentence openings"

    def ci(r, c):  # the interval columns drop "_rate": fluent_rate's are fluent_low / fluent_high
        stem = c.removesuffix("_rate")
        return f"{r[c]:.2f} [{r[stem + '_low']:.2f}, {r[stem + '_high']:.2f}]"

    ctrl = lambda r: ("–" if pd.isna(r.get("control_fluent_rate"))  # noqa: E731
                      else f"{r['control_fluent_rate']:.2f} / {_fmt(r['control_relevance'], 2)}")
    rows = [[r["method"], f"{r['target_rate']:.2f}", ci(r, "fluent_rate"),
             "–" if pd.isna(r["relevance"]) else ci(r, "relevance"),
             "–" if pd.isna(r["score"]) else ci(r, "score"), ctrl(r)] for _, r in pooled.iterrows()]
    out = ["## Every steering method on one footing: forcing, fluency and meaning",
           f"Each method steers {prompts} in other languages into {', '.join(targets)} ({n} evaluation "
           "generations pooled), at the strength it scored best with on separate tuning prompts "
           "(`steer_bench/tuning.csv`). *Fluent* = in the target and fluent by the criterion above; *relevance* = "
           "how related the continuation is to its prompt by multilingual-e5-small (0 = a random sentence, "
           "1 = a translation); *score* = their harmonic mean. 95% intervals; the random control's fluent rate "
           "and relevance beside each row; every generation is in `steer_bench/generations.csv`.",
           _table(["method", "in target", "fluent in target", "relevance", "score", "control: fluent / relevance"],
                  rows)]
    fig = _figure(d, "steer_bench/figures/steer_bench_scatter.png",
                  "Forcing (fluent target-language rate) against meaning (relevance to the prompt) per method; "
                  "random controls hollow")
    return out + ([fig] if fig else [])


def method_sentence(method: str, params: dict) -> str:
    """How a neuron set was identified, as a sentence a reader can follow (the parameters are in
    the set's neurons.json): the registered method's own ``describe`` (:mod:`..identify.methods`),
    or its name and parameters."""
    p = params or {}
    registered = method_of(str(method))
    text = registered.describe(p) if registered is not None and registered.describe is not None else None
    if text:
        return text
    shown = "; ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in p.items() if not isinstance(v, (dict, list)))
    return f"Method **{method}**" + (f" ({shown})" if shown else "") + "."


def _identification_section(d: Path) -> list[str]:
    a = _read_json(d / "analysis" / "summary.json")
    if a is None:
        return []
    out = ["## Language-specific neurons",
           method_sentence(a.get("method"), a.get("params", {})) + " "
           f"Activations read at site `{a.get('site')}`: {a.get('union')} neurons "
           f"({100 * a.get('union_share_of_model', 0):.1f}% of the model), "
           f"{100 * (a.get('share_shared_by_2_or_more') or 0):.0f}% of them shared by two or more languages.",
           _table(["language", "neurons"], [[k, v] for k, v in a.get("counts", {}).items()])]
    for rel, cap in (("figures/layer_placement.png", "Where the neurons sit: each language's neurons per layer "
                      "(counts), and below, their union per layer"),
                     ("figures/overlap_heatmap.png", "Overlap (Jaccard) of the languages' sets"),
                     ("figures/overlap_clustermap.png", "The same overlaps with the languages clustered (average "
                      "linkage), banded by branch, family and script"),
                     ("figures/shared_by_k.png", "Neurons shared by k languages"),
                     ("figures/entropy_distribution.png", "LAPE entropy of all neurons and the selection cutoff")):
        fig = _figure(d, rel, cap)
        if fig:
            out.append(fig)
    rel = a.get("relatedness", {}).get("tests", {}).get("within_vs_across", {})
    if rel:
        out.append("Do related languages share more neurons? Within-group minus across-group mean overlap, "
                   "permutation p-value: " + "; ".join(
                       f"{by}: {_fmt(r.get('statistic'))} (p = {_fmt(r.get('p_value'))})"
                       for by, r in rel.items() if "statistic" in r) + ".")
    return out


def write_report(out: str | os.PathLike, title: str = "Language-specific neurons") -> Path:
    """Write ``report.md`` into the pipeline's output directory ``out`` and return its path."""
    d = Path(out)
    if not d.is_dir():
        raise LangNeuronsError(f"no such output directory: {str(d)!r}")
    run = _read_json(d / "summary.json") or {}
    parts = [f"# {title}"]
    if run:
        toks = run.get("tokens", {})
        parts.append(f"Model `{run.get('model')}`, site `{run.get('site')}`, {len(run.get('languages', []))} "
                     f"languages ({', '.join(run.get('languages', []))}); statistics from "
                     f"{sum(toks.values()):,} tokens of the `stats` split.")
    parts += (_identification_section(d) + _ppl_section(d) + _steer_section(d) + _steer_section(d, "steer_diffmean")
              + _steer_bench_section(d))
    if len(parts) == 1 + bool(run):
        raise LangNeuronsError(f"{str(d)!r} holds no pipeline output to report (no analysis/, ppl/ or steer/)")
    path = d / REPORT_NAME
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path
