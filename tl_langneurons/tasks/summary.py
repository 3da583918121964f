"""Summaries of a :attr:`TaskRun.frame`: each task's headline metric, the change from baseline
(task × intervened language, the control beside it), and own-language against other-language change."""

import math

import pandas as pd

from ..errors import LangNeuronsError, choices

# the metric a task is summarised by, the first of these it reports (its lm-eval metric names)
HEADLINE = ("acc", "chrf", "exact_match", "f1", "bleu", "acc_norm", "word_perplexity")


def headline_metric(frame: pd.DataFrame, task: str, metric: str | None = None) -> str:
    """``metric`` if ``task`` reports it, else the first of :data:`HEADLINE` that it reports."""
    have = list(dict.fromkeys(frame.loc[frame.task == task, "metric"]))
    if metric is not None:
        if metric not in have:
            raise LangNeuronsError(f"task {task!r} reports no metric {metric!r}; it has {choices(have)}")
        return metric
    return next((m for m in HEADLINE if m in have), have[0])


def change_matrix(frame: pd.DataFrame, condition: str = "intervention", metric: str | None = None) -> pd.DataFrame:
    """value(condition) − value(baseline): tasks × intervened languages (in the order they ran),
    each task at its headline metric (or ``metric``), filter ``none`` where it has one."""
    rows = {}
    for task in dict.fromkeys(frame.task):
        m = headline_metric(frame, task, metric)
        sub = frame[(frame.task == task) & (frame.metric == m)]
        filt = "none" if "none" in set(sub["filter"]) else sub["filter"].iloc[0]
        sub = sub[sub["filter"] == filt]
        base = sub.loc[sub.condition == "baseline", "value"]
        if base.empty:
            raise LangNeuronsError(f"the frame has no baseline row for task {task!r}")
        cond = sub[sub.condition == condition]
        rows[task] = {r.intervened: r.value - float(base.iloc[0]) for r in cond.itertuples()}
    labels = list(dict.fromkeys(frame.loc[frame.condition == "intervention", "intervened"]))
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=labels)


PER_DOC = ("acc", "acc_norm", "exact_match", "f1")  # metrics lm-eval logs per document


def paired_stderr(base: list, other: list, metric: str) -> float:
    """The standard error of the mean per-document difference ``other − base`` of ``metric``
    (lm-eval per-sample logs of the same documents, matched by ``doc_hash``); NaN for a metric
    lm-eval does not log per document (a corpus score such as chrF++) or under two documents."""
    if metric not in PER_DOC or not base or metric not in base[0]:
        return math.nan
    a = {s["doc_hash"]: float(s[metric]) for s in base}
    d = [float(s[metric]) - a[s["doc_hash"]] for s in other if s["doc_hash"] in a]
    if len(d) < 2:
        return math.nan
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


def tasks_summary(frame: pd.DataFrame, metric: str | None = None, samples: dict | None = None) -> dict:
    """The headline numbers of a run.

    * ``baseline`` — per task: its headline metric, value, stderr, n, language;
    * ``change`` — per task × intervened language: the change under the intervention and under
      the control;
    * ``own_delta`` — the mean change of a task in the intervened language's own language, over
      intervened languages that have one; ``other_delta`` — the mean change of the other tasks;
      ``control_own_delta`` — the control's own-language change; ``own_most_changed`` — the share
      of intervened languages whose own task changed most (the largest absolute change).
    """
    tasks = list(dict.fromkeys(frame.task))
    lang = {t: frame.loc[frame.task == t, "language"].iloc[0] for t in tasks}
    base = {}
    for t in tasks:
        m = headline_metric(frame, t, metric)
        r = frame[(frame.task == t) & (frame.metric == m) & (frame.condition == "baseline")].iloc[0]
        base[t] = {"metric": m, "value": r.value, "stderr": r.stderr, "n": r.n, "language": lang[t]}
    out = {"tasks": tasks, "baseline": base}
    if not (frame.condition == "intervention").any():
        return out
    inter = change_matrix(frame, "intervention", metric)
    ctrl = change_matrix(frame, "control", metric) if (frame.condition == "control").any() else None
    change, own, other, ctrl_own, most = [], [], [], [], []
    for label in inter.columns:
        own_tasks = [t for t in tasks if lang[t] == label]
        for t in tasks:
            d = float(inter.loc[t, label])
            c = float(ctrl.loc[t, label]) if ctrl is not None and label in ctrl.columns else None
            entry = {"task": t, "language": lang[t], "intervened": label, "metric": base[t]["metric"],
                     "delta": d, "control_delta": c}
            if samples is not None:
                b = samples.get(("baseline", None), {}).get(t, [])
                entry["stderr"] = paired_stderr(b, samples.get(("intervention", label), {}).get(t, []), entry["metric"])
                entry["control_stderr"] = paired_stderr(b, samples.get(("control", label), {}).get(t, []),
                                                        entry["metric"]) if c is not None else None
            change.append(entry)
            (own if t in own_tasks else other).append(d)
            if t in own_tasks and c is not None:
                ctrl_own.append(c)
        if own_tasks and len(tasks) > 1:
            col = inter[label].abs()
            most.append(col.idxmax() in own_tasks)
    out.update({"change": change, "own_delta": _mean(own), "other_delta": _mean(other),
                "control_own_delta": _mean(ctrl_own), "own_most_changed": _mean([float(x) for x in most]),
                "n_intervened": len(inter.columns)})
    return out
