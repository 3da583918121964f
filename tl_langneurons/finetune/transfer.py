"""Cross-lingual transfer of a fine-tuning (Mondal et al. 2025): train on a source language with
each method and control, score every evaluation language with :mod:`..tasks`, and compare with the
base model on the same documents."""

import gc
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .. import _checks
from ..errors import LangNeuronsError, choices
from .._io import safe_join
from ..models import weights_hash
from ..resume import content_hash, open_store, run_unit
from .adapter import Adapter, merged_folder
from .data import Example, task_examples, text_examples
from ..tasks.summary import paired_stderr
from .masks import NeuronMask, neuron_mask, random_mask
from .methods import METHODS, FinetuneConfig
from .train import finetune

COLUMNS = ["method", "condition", "task", "language", "metric", "value", "stderr", "n", "base_value", "delta",
           "delta_stderr"]


def training_examples(tokenizer, spec: str, limit: int | None = None, max_length: int = 128) -> list[Example]:
    """Examples from ``spec``: ``text:<lang>`` — sentences of the built-in corpus's ``train`` split
    (causal LM); anything else — an lm-eval task name, trained on its ``train`` split (prompt → answer)."""
    if not isinstance(spec, str) or not spec:
        raise LangNeuronsError(f"the training data must be 'text:<lang>' or an lm-eval task name, got {spec!r}")
    if spec.startswith("text:"):
        from ..corpus import load_corpus

        lang = spec[len("text:"):]
        texts = load_corpus("builtin", languages=[lang], split="train", max_sentences=limit)[lang]
        return text_examples(tokenizer, texts, max_length)
    return task_examples(tokenizer, spec, "train", limit, max_length)


@dataclass
class TransferRun:
    """What :func:`transfer` returns: ``table`` (one row per method × condition × task × metric,
    with the base model's value, the change ``delta`` and its paired stderr), the
    :class:`Adapter` of each run by ``(method, condition)``, and the base model's scores."""

    table: pd.DataFrame
    adapters: dict = field(repr=False)
    base: pd.DataFrame | None = field(repr=False)  # None when no task was scored


def compare_with_base(tuned: Any, tasks, base, method: str, condition: str, limit: int | None = None,
                      batch_size: int = 8, checkpoint=None) -> list[dict]:
    """Rows of the transfer table for one fine-tuned model: ``tasks`` scored on ``tuned`` (the
    same documents as ``base``, a :class:`~.tasks.TaskRun` of the base model), with the base
    value, the change and its paired stderr."""
    from ..tasks import evaluate_tasks

    run = evaluate_tasks(tuned, tasks, limit=limit, batch_size=batch_size, progress=False, checkpoint=checkpoint)
    bs, ts = base.samples[("baseline", None)], run.samples[("baseline", None)]
    merged = run.frame.merge(base.frame[["task", "metric", "filter", "value"]].rename(columns={"value": "base_value"}),
                             on=["task", "metric", "filter"])
    return [{"method": method, "condition": condition, "task": r.task, "language": r.language, "metric": r.metric,
             "value": r.value, "stderr": r.stderr, "n": r.n, "base_value": r.base_value,
             "delta": r.value - r.base_value,
             "delta_stderr": paired_stderr(bs.get(r.task, []), ts.get(r.task, []), r.metric)}
            for r in merged.itertuples()]


def run_name(method: str, condition: str) -> str:
    """The folder (and legend) name of a run: the method, ``-random`` for the random mask."""
    return f"{method}-random" if condition == "random" else method


def default_runs(methods, random_control: bool = True) -> list[tuple[str, str]]:
    """``(method, condition)`` of every run: the masked methods on the neurons (``neurons``) and,
    with ``random_control``, on a random mask (``random``); the others unmasked (``none``)."""
    out = []
    for m in methods:
        if m not in METHODS:
            raise LangNeuronsError(f"unknown method {m!r}; allowed: {choices(METHODS)}")
        if m in ("masked-lora", "selected-rows"):
            out.append((m, "neurons"))
            if random_control:
                out.append((m, "random"))
        else:
            out.append((m, "none"))
    return out


def transfer(model: Any, neurons, language, train: list[Example], tasks, methods=METHODS, *,
             random_control: bool = True, runs: list[tuple[str, str]] | None = None,
             config: FinetuneConfig | None = None, matrices=None, limit: int | None = None, batch_size: int = 8,
             out=None, merged: bool = False, train_info: dict | None = None, progress: bool = True,
             metric: str | None = None, checkpoint=None, checkpoint_every: int = 10) -> TransferRun:
    """Fine-tune ``model`` on ``train`` with every method (and the random-mask control of the
    masked ones), and score ``tasks`` on each fine-tuned model and on the base model.

    Args:
        model: a model :func:`~.load_model` loaded (the base; it is scored, never changed).
        neurons, language: the mask is ``language``'s neurons (a language or a list: their union).
        train: training examples (:func:`training_examples`).
        tasks: lm-eval task names scored on every model (:func:`~.tasks.evaluate_tasks`); empty:
            train and save only (the table is empty).
        methods, random_control: the runs (:func:`default_runs`), unless ``runs`` lists
            ``(method, condition)`` pairs (condition ``neurons``, ``random`` or ``none``).
        config: the shared settings (:class:`FinetuneConfig`; ``method`` and ``matrices`` are set per run).
        matrices: the MLP projections updated (default: each method's own, see :class:`FinetuneConfig`).
        limit, batch_size: of the task runs.
        out: a folder for each run's adapter (``<method>[-random]/``) and merged model
            (``…/merged/``, written when tasks are scored or ``merged``); default a temporary
            folder, removed afterwards.
        train_info: recorded in each adapter's JSON (what it was trained on).
        metric: the metric the caller summarises by, checked against the base model's scores
            before any training.
        checkpoint: a :class:`~..resume.Checkpointed` store: the base model's task runs, each
            fine-tuning run (and its optimizer steps, every ``checkpoint_every``) and each tuned
            model's task runs are units of work; a killed run resumes exactly. Needs ``out``.
    """
    import tempfile

    from ..loading import load_model
    from ..tasks import evaluate_tasks

    methods = [methods] if isinstance(methods, str) else list(methods)
    _checks.boolean("random_control", random_control)
    runs = default_runs(methods, random_control) if runs is None else list(runs)
    if not runs or any(m not in METHODS or c not in ("neurons", "random", "none") for m, c in runs):
        raise LangNeuronsError(f"runs must be (method, condition) pairs of {choices(METHODS)} × "
                               f"'neurons'/'random'/'none', got {runs!r}")
    tasks = list(tasks or [])
    config = config or FinetuneConfig()
    mask = neuron_mask(neurons, language)
    control = random_mask(mask, config.seed)
    if checkpoint is not None and out is None:
        raise LangNeuronsError("a resumable transfer needs out= (the adapters of completed runs are read back from it)")
    tmp = tempfile.TemporaryDirectory() if out is None else None
    root = Path(tmp.name if tmp is not None else out)
    store = open_store(checkpoint, "transfer", {
        "model": weights_hash(model), "neurons": content_hash(neurons), "language": language,
        "train": content_hash(train), "tasks": tasks,
        "runs": runs, "config": config.as_dict(), "matrices": matrices, "limit": limit, "batch_size": batch_size,
        "merged": merged, "train_info": train_info})
    section = (lambda name: store.section(name)) if store is not None else (lambda name: None)  # noqa: E731
    base = evaluate_tasks(model, tasks, limit=limit, batch_size=batch_size, progress=False, metric=metric,
                          checkpoint=section("base")) if tasks else None
    rows, adapters = [], {}
    try:
        for method, condition in runs:
            name = run_name(method, condition)
            folder = safe_join(root, name, what="run name")

            def one() -> dict:
                cfg = replace(config, method=method, matrices=matrices)
                the_mask: NeuronMask | None = {"neurons": mask, "random": control}.get(condition)
                adapter = finetune(model, train, cfg, the_mask, progress=progress, checkpoint=section(f"train {name}"),
                                   checkpoint_every=checkpoint_every,
                                   train_info={**(train_info or {}), "language_neurons": list(mask.languages),
                                               "condition": condition})
                adapter.save(folder)
                if tasks or merged:
                    merged_dir = merged_folder(adapter, folder / "merged")
                if not tasks:
                    return {"rows": []}
                tuned = load_model(str(merged_dir), site="act")
                got = compare_with_base(tuned, tasks, base, method, condition, limit, batch_size,
                                        checkpoint=section(f"eval {name}"))
                del tuned
                gc.collect()
                return {"rows": got}

            rows += run_unit(store, f"run {name}", one)["rows"]
            adapters[(method, condition)] = Adapter.load(folder)  # what was saved, in every run alike
    finally:
        if tmp is not None:
            tmp.cleanup()
    return TransferRun(pd.DataFrame(rows, columns=COLUMNS), adapters, base.frame if base is not None else None)


def transfer_summary(table: pd.DataFrame, source: str | None = None, metric: str = "acc") -> dict:
    """Per method × condition: the mean change over the evaluation languages (and over those
    other than ``source``, the transfer), at ``metric``."""
    t = table[table.metric == metric]
    if t.empty:
        raise LangNeuronsError(f"the transfer table has no metric {metric!r}; it has "
                               f"{choices(sorted(set(table.metric)))}")
    out = {}
    for (method, condition), g in t.groupby(["method", "condition"], sort=False):
        other = g[g.language != source] if source is not None else g
        out[f"{method}/{condition}"] = {"mean_delta": float(g.delta.mean()),
                                         "transfer_delta": float(other.delta.mean()) if len(other) else None,
                                         "source_delta": float(g[g.language == source].delta.mean())
                                         if source is not None and (g.language == source).any() else None,
                                         "n_tasks": len(g)}
    return out
