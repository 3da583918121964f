"""lm-eval tasks under interventions: baseline, intervention and control on the same documents.

Every condition is one ``lm_eval.simple_evaluate`` run of the same task specifications with the
same seeds and ``limit``, so lm-eval selects the same documents and builds the same requests; the
runner checks this (each sample's ``doc_hash``) rather than assuming it. lm-eval's request cache
is never used: a cache would hand the baseline's answers to the intervention.

The intervention is on at every position of every request (``positions="all"``): the context, the
continuation being scored and, for generation tasks, every generated token. That is what
Rahmanisa et al. 2025 do (their hook amplifies every position), and it is the only choice that
means the same for a multiple-choice request (one forward pass over context + continuation) and a
generated answer.
"""

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .. import _checks, _smoke
from .._io import atomic_write_text, path_hash, safe_join, safe_name
from ..identity import weights_hash
from ..resume import content_hash, open_store, run_unit
from ..errors import LangNeuronsError, choices
from ..evaluate.conditions import check_control, check_neurons, under
from ..identify import random_like
from ..intervene import DiffMean, Intervention
from ..intervene.modes import ZERO, get_mode, mode_names
from ..intervene.specs import as_items
from ..neurons import LanguageNeurons
from ..progress import track
from .compat import install_squad_metrics
from .lm import task_lm
from .naming import task_language
from .registry import load_specs, task_manager, task_specs
from .translation import task_signatures

COLUMNS = ["task", "language", "condition", "intervened", "metric", "filter", "value", "stderr", "n"]


@dataclass
class TaskRun:
    """What :func:`evaluate_tasks` returns.

    Attributes:
        frame: the tidy table — one row per task × condition × intervened language × metric:
            ``task, language`` (the language the task measures, from its name; ``None`` when the
            name does not say), ``condition`` (``baseline``/``intervention``/``control``),
            ``intervened`` (whose neurons; ``None`` for the baseline), ``metric``, ``filter``
            (lm-eval's filter name), ``value``, ``stderr`` (lm-eval's; NaN where it gives none),
            ``n`` (documents scored). Groups (e.g. INCLUDE's per-language groups) have rows too.
        samples: lm-eval's per-sample log, ``{(condition, intervened): {task: [sample, ...]}}``.
        configs: lm-eval's resolved task configurations, by task.
        versions: lm-eval's task versions, by task.
        signatures: sacreBLEU's signature of each corpus-level translation metric, by task and
            metric (``{"tlln_flores_en_de": {"chrf++": "nrefs:1|…|nw:2|…"}}``; ``None`` for an
            spBLEU that could not be computed), for the tasks scored with
            :mod:`.translation`'s aggregations; a score is only comparable with its signature.
    """

    frame: pd.DataFrame
    samples: dict = field(repr=False)
    configs: dict = field(repr=False)
    versions: dict = field(repr=False)
    signatures: dict = field(default_factory=dict, repr=False)


def _control_of(item, seed: int):
    """The random control of one intervention: the same operation on :func:`random_like` neurons
    (same count per layer; ``set``/``add`` keep the language's statistics), or, for a
    :class:`DiffMean`, a random direction of the same norm."""
    if isinstance(item, DiffMean):
        from ..evaluate.steering import random_direction_like

        return random_direction_like(item, seed)
    if isinstance(item, Intervention) and isinstance(item.neurons, LanguageNeurons):
        lang = item.language or item.neurons.languages[0]
        return replace(item, neurons=random_like(item.neurons.select([lang]), seed), language=lang)
    raise LangNeuronsError("control='random' needs Interventions on a LanguageNeurons set or DiffMeans; "
                           "for other interventions pass controls= yourself")


def _plan(neurons, targets, mode, value, factor, stats, statistic, interventions, controls, control, seed
          ) -> tuple[dict[str, list], dict[str, list]]:
    """``({intervened: items}, {intervened: control items})``, every item built (and so checked)."""
    check_control(control)
    if interventions is not None:
        if neurons is not None or targets is not None:
            raise LangNeuronsError("give either neurons= with targets= or interventions=, not both")
        if not isinstance(interventions, dict) or not interventions:
            raise LangNeuronsError("interventions must map a label (the intervened language) to an Intervention, "
                                   f"a DiffMean or a list of them; got {type(interventions).__name__}")
        plan = {str(k): as_items(v) for k, v in interventions.items()}
        if controls is not None:
            if set(controls) != set(plan):
                raise LangNeuronsError(f"controls must have the same labels as interventions: {choices(plan)}")
            ctrl = {str(k): as_items(v) for k, v in controls.items()}
        elif control == "random":
            ctrl = {k: [_control_of(i, seed) for i in items] for k, items in plan.items()}
        else:
            ctrl = {}
        return plan, ctrl
    if controls is not None:
        raise LangNeuronsError("controls= goes with interventions=; with neurons= use control='random' or None")
    if neurons is None:
        return {}, {}  # baseline only
    neurons = check_neurons(neurons)
    if targets is None:
        raise LangNeuronsError(f"targets= names whose neurons to intervene on; the set has {choices(neurons.languages)}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    missing = [t for t in targets if t not in neurons]
    if missing or not targets:
        raise LangNeuronsError(f"unknown target language {(missing or [None])[0]!r}; the neuron set has: "
                               f"{choices(neurons.languages)}")
    get_mode(mode, mode_names(tasks=True))
    plan = {t: [Intervention(neurons, mode, value=value, factor=factor, stats=stats, statistic=statistic,
                             language=t)] for t in targets}
    ctrl_set = random_like(neurons.select(targets), seed) if control == "random" else None
    ctrl = {t: [Intervention(ctrl_set, mode, value=value, factor=factor, stats=stats, statistic=statistic,
                             language=t)] for t in targets} if ctrl_set is not None else {}
    return plan, ctrl


def _rows(results: dict, condition: str, intervened: str | None) -> list[dict]:
    rows = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results["results"].items():
        n = n_samples.get(task, {}).get("effective")
        if n is None:  # a group: the documents of its members
            members = results.get("group_subtasks", {}).get(task, [])
            n = sum(n_samples.get(m, {}).get("effective", 0) for m in members) or None
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "language": task_language(task), "condition": condition,
                         "intervened": intervened, "metric": metric, "filter": filt,
                         "value": float(value) if value is not None else float("nan"),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"), "n": n})
    return rows


def _doc_hashes(samples: dict) -> dict[str, list]:
    return {task: [(s["doc_id"], s["doc_hash"]) for s in rows] for task, rows in samples.items()}


class _CustomDatasetNote(logging.Filter):
    """Drops lm-eval's note, printed for every task built on a ``custom_dataset`` loader (all the
    package's tasks), that custom arguments can be passed as metadata: it says nothing about the
    task and would be printed three times per task per intervened language."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


@contextmanager
def _quiet_custom_dataset_notes():
    log, note = logging.getLogger("lm_eval.api.task"), _CustomDatasetNote()
    log.addFilter(note)
    try:
        yield
    finally:
        log.removeFilter(note)


def evaluate_tasks(model: Any, tasks, neurons=None, targets=None, mode: str = ZERO.name, *, value=None, factor=None,
                   stats=None, statistic: str = "mean", interventions: dict | None = None,
                   controls: dict | None = None, control: str | None = "random", seed: int = 0,
                   limit: int | None = None, batch_size: int = 8, num_fewshot: int | None = None,
                   sources: dict | None = None, task_config: dict | None = None, include_path=None,
                   bootstrap_iters: int = 1000, metric: str | None = None,
                   progress: bool = True, checkpoint=None) -> TaskRun:
    """Score lm-eval tasks without intervention, under each intervention, and under its control.

    Args:
        model: a ``TransformerBridge`` or TL 3.x ``HookedTransformer`` (:func:`~.load_model`).
        tasks: lm-eval task or group names (``"xcopa_it"``, ``"include_base_44_german"``) and the
            package's own (``"tlln_cloze_de"``, ``"tlln_translate_en_de"``; see :mod:`.registry`).
        neurons, targets, mode, value, factor, stats, statistic: the neuron interventions, one per
            target language: ``targets``' neurons of ``neurons`` (a :class:`LanguageNeurons`) under
            ``mode`` (a mode that runs under tasks: ``zero``, ``set``, ``scale``, ``add``) with ``value``/``factor``/``stats``
            as in :class:`~.Intervention`. Without ``neurons`` only the baseline runs.
        interventions: instead of the above, ``{label: Intervention | DiffMean | [items]}`` for any
            intervention the package can build (e.g. language arithmetic, a diffmean direction).
        controls: with ``interventions``, their controls by the same labels; by default
            (``control="random"``) each item's random counterpart — the same operation on random
            neurons with the same count per layer, or a random direction of the same norm.
        control: ``"random"`` (default) or ``None`` (no control runs).
        seed: the random control's seed; lm-eval's own seeds are its defaults, in every condition.
        limit: score the first ``limit`` documents of each task (lm-eval's ``limit``).
        batch_size: lm-eval's batch size.
        num_fewshot: few-shot examples (lm-eval's default for the task when ``None``).
        sources: ``{task: {split: local file}}`` — read that task's data from local files, its
            definition unchanged (:func:`.registry.task_specs`).
        task_config: ``{task: {key: value}}`` — replace keys of a task's YAML config, e.g. a small
            ``generation_kwargs`` ``max_gen_toks`` for a quick generation run (the same in every
            condition; :func:`.registry.task_specs`).
        include_path: further folders of lm-eval task YAML files.
        bootstrap_iters: lm-eval's bootstrap resamples for the stderr of non-mean metrics.
        metric: the metric the caller will summarise by: checked against what every task reports
            as soon as the baseline has run, not after every condition.
        checkpoint: a :class:`~..resume.Checkpointed` store: each condition (x intervened
            language) is a unit of work, so a killed run resumes after the last one completed and
            equals the uninterrupted run (samples, configs and versions are kept in the units).

    Returns:
        a :class:`TaskRun` (``.frame`` is the tidy table).
    """
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    if not isinstance(tasks, (list, tuple)) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise LangNeuronsError(f"tasks must be a non-empty list of lm-eval task names, got {tasks!r}")
    tasks = list(dict.fromkeys(tasks))
    limit = _smoke.cap(_checks.positive_int("limit", limit, allow_none=True), _smoke.DOCUMENTS)
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_fewshot = _checks.integer("num_fewshot", num_fewshot, 0, allow_none=True)
    bootstrap_iters = _checks.integer("bootstrap_iters", bootstrap_iters, 0)
    plan, ctrl = _plan(neurons, targets, mode, value, factor, stats, statistic, interventions, controls,
                       control, seed)
    manager = task_manager(tasks, include_path)
    install_squad_metrics()  # XQuAD's scoring code imports it; transformers 5 dropped it (.compat)
    specs = task_specs(tasks, manager, sources, num_fewshot, task_config)
    lm = task_lm(model, batch_size)
    runs = [("baseline", None, [])]
    for label, items in plan.items():
        runs.append(("intervention", label, items))
        if label in ctrl:
            runs.append(("control", label, ctrl[label]))

    from lm_eval import simple_evaluate

    store = open_store(checkpoint, "evaluate_tasks", {
        "model": weights_hash(model), "tasks": tasks, "interventions": content_hash(plan),
        "controls": content_hash(ctrl), "limit": limit, "batch_size": batch_size, "num_fewshot": num_fewshot,
        "sources": {t: {k: path_hash(v) for k, v in splits.items()} for t, splits in (sources or {}).items()},
        "task_config": task_config, "include_path": path_hash(include_path) if include_path else None,
        "bootstrap_iters": bootstrap_iters, "lm_eval": _lm_eval_version()})
    names = [f"{condition} {label}" for condition, label, _ in runs]
    if store is not None:
        store.announce(names)

    def one(condition: str, label: str | None, items: list) -> dict:
        with under(model, items, "all"), _quiet_custom_dataset_notes():
            out = simple_evaluate(model=lm, tasks=load_specs(specs, manager), num_fewshot=num_fewshot, limit=limit,
                                  task_manager=manager, log_samples=True, cache_requests=False,
                                  bootstrap_iters=bootstrap_iters)
        if out is None:
            raise RuntimeError("lm-eval returned no results (a non-zero rank of a distributed run?)")
        return {"rows": _rows(out, condition, label), "samples": out["samples"], "configs": out.get("configs", {}),
                "versions": out.get("versions", {})}

    rows, samples, configs, versions, hashes = [], {}, {}, {}, None
    for (condition, label, items), name in track(list(zip(runs, names)), "tasks", progress and len(runs) > 1, "run"):
        out = run_unit(store, name, lambda: one(condition, label, items))
        seen = _doc_hashes(out["samples"])
        if hashes is None:
            hashes = seen
        elif seen != hashes:
            bad = next(t for t in hashes if seen.get(t) != hashes[t])
            raise RuntimeError(f"lm-eval scored different documents of {bad!r} under {condition} {label}")
        rows += out["rows"]
        samples[(condition, label)] = out["samples"]
        configs.update(out["configs"])
        versions.update(out["versions"])
        if condition == "baseline" and metric is not None:  # a metric no task reports fails now
            from .summary import headline_metric

            first = pd.DataFrame(rows, columns=COLUMNS)
            for task in dict.fromkeys(first.task):
                headline_metric(first, task, metric)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    signatures = {task: sig for task, cfg in configs.items() if (sig := task_signatures(cfg))}
    return TaskRun(frame=frame, samples=samples, configs=configs, versions=versions, signatures=signatures)


def _lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def _file_name(name: str) -> str:
    """A task name as a file name: itself where it is a safe name, else its unsafe characters
    replaced and a short hash added (lm-eval names are not ours to refuse at the end of a run)."""
    import hashlib
    import re

    if _is_safe(name):
        return name
    return re.sub(r"[^A-Za-z0-9_.+@-]", "_", name).strip(".")[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _is_safe(name: str) -> bool:
    try:
        safe_name("task", name)
        return True
    except LangNeuronsError:
        return False


def write_samples(run: TaskRun, folder: str | Path) -> list[Path]:
    """lm-eval's per-sample log, one JSON-lines file per condition × intervened language × task
    (``samples/<condition>[_<intervened>]/<task>.jsonl``); returns the files written."""
    import json

    folder = Path(folder)
    written = []
    for (condition, label), by_task in run.samples.items():
        # the intervened label names a folder: a safe name, checked to stay inside `folder`
        sub = safe_join(folder, condition if label is None else f"{condition}_{label}", what="intervened language")
        sub.mkdir(parents=True, exist_ok=True)
        for task, rows in by_task.items():
            path = safe_join(sub, _file_name(task) + ".jsonl", what="task")
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
            written.append(path)
    return written
