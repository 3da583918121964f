"""Finding lm-eval tasks: lm-eval's own, the package's shipped ones, and local copies of their data.

The package's tasks (``tlln_cloze_<lang>``, ``tlln_translate_<src>_<tgt>``, ``tlln_flores_<src>_<tgt>``)
are ordinary lm-eval YAML files under :data:`TASKS_DIR`; lm-eval's own
``TaskManager(include_path=TASKS_DIR)`` finds them, so ``lm_eval --include_path`` does too.

``sources`` redirects a task's data to local files without touching its definition: the task's own
YAML (templates, metrics, splits, ``process_docs``) is loaded by lm-eval and only the dataset
location is replaced — ``dataset_path`` becomes the ``datasets`` loader for the files' format
(``json``, ``parquet``, ``csv``) and ``dataset_kwargs`` its ``data_files``. The split lm-eval
scores must be among the files; the task's other splits that the files lack (e.g. XCOPA's
``validation`` few-shot pool in a zero-shot run) are unset (:func:`redirected`). For a group (e.g.
``include_base_44_albanian``) the redirect applies to each member task (:class:`GroupRedirect`). Tasks whose data comes from
a ``custom_dataset`` function (the FLORES+ pairs) receive the files as ``data_files=``.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import LangNeuronsError, choices

TASKS_DIR = Path(__file__).parent / "definitions"
"""The folder of the package's lm-eval task definitions (pass it as ``include_path``)."""

BUILTIN_PREFIX = "tlln_"
_LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}


def _include_paths(include_path) -> tuple[str, ...]:
    if include_path is None:
        return ()
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    for p in paths:
        if not Path(p).is_dir():
            raise LangNeuronsError(f"include_path {str(p)!r} is not a folder of lm-eval task YAML files")
    return tuple(str(Path(p).resolve()) for p in paths)


@lru_cache(maxsize=4)
def _manager(include_paths: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    # indexing lm-eval's ~15,000 task files takes ~10 s: one manager per set of paths per process
    return TaskManager(include_path=[str(TASKS_DIR), *include_paths], include_defaults=defaults)


def task_manager(tasks=None, include_path=None):
    """lm-eval's ``TaskManager`` over its own tasks, the package's (:data:`TASKS_DIR`) and
    ``include_path``. When every name in ``tasks`` is one of the package's, lm-eval's own tasks
    are not indexed (that takes ~10 s and is not needed)."""
    only_ours = tasks is not None and include_path is None and all(
        isinstance(t, str) and t.startswith(BUILTIN_PREFIX) for t in tasks)
    return _manager(_include_paths(include_path), not only_ours)


def _loader(files: dict[str, str]) -> str:
    kinds = set()
    for split, f in files.items():
        p = Path(f)
        suffix = p.suffix if p.suffix != ".gz" else Path(p.stem).suffix
        if suffix not in _LOADERS:
            raise LangNeuronsError(f"cannot read {str(f)!r}: allowed file types {choices(sorted(_LOADERS))}")
        kinds.add(_LOADERS[suffix])
    if len(kinds) != 1:
        raise LangNeuronsError(f"the splits of one task must share a file type, got {choices(sorted(kinds))}")
    return kinds.pop()


def _check_files(name: str, files) -> dict[str, str]:
    if not isinstance(files, dict) or not files or not all(isinstance(k, str) for k in files):
        raise LangNeuronsError(f"sources[{name!r}] must map split names to files, e.g. {{'test': 'x.jsonl'}}; "
                               f"got {files!r}")
    for split, f in files.items():
        if not Path(f).is_file():
            raise LangNeuronsError(f"the local data file {str(f)!r} (sources[{name!r}][{split!r}]) does not exist")
    return {k: str(Path(v).resolve()) for k, v in files.items()}


_SPLITS = ("training_split", "validation_split", "test_split", "fewshot_split")


def _fewshot_split(cfg: dict) -> str | None:
    """The split lm-eval draws few-shot examples from (``ConfigurableTask.fewshot_docs``)."""
    return next((cfg.get(k) for k in ("fewshot_split", "training_split", "validation_split", "test_split")
                 if cfg.get(k) is not None), None)


def redirected(config: dict, files: dict[str, str], name: str | None = None, num_fewshot: int | None = None
               ) -> dict:
    """``config`` (a task's full YAML config) with its data read from ``files`` ({split: path}).

    The split lm-eval scores (``test_split``, else ``validation_split``) must be among ``files``;
    the task's other splits that ``files`` lacks are unset, because lm-eval reads them when it
    builds the task (its few-shot pool) and would fail on a split the local data does not have.
    With few-shot examples (``num_fewshot``, else the task's own) the split they come from must be
    among ``files`` too: unsetting it would silently draw them from another split.
    """
    cfg = dict(config)
    if cfg.get("custom_dataset") is not None:
        cfg["dataset_kwargs"] = {**(cfg.get("dataset_kwargs") or {}), "data_files": files}
        return cfg
    name = name or cfg.get("task")
    scored = cfg.get("test_split") or cfg.get("validation_split")
    if scored is not None and scored not in files:
        raise LangNeuronsError(f"sources[{name!r}] has no {scored!r} split, the split lm-eval scores for this task; "
                               f"given: {choices(files)}")
    shots = num_fewshot if num_fewshot is not None else (cfg.get("num_fewshot") or 0)
    pool = _fewshot_split(cfg)
    if shots > 0 and pool is not None and pool not in files:
        raise LangNeuronsError(f"{shots}-shot {name!r} draws its examples from the {pool!r} split, which "
                               f"sources[{name!r}] lacks (given: {choices(files)})")
    for key in _SPLITS:
        if cfg.get(key) is not None and cfg[key] not in files:
            cfg[key] = None
    cfg["dataset_path"] = _loader(files)
    cfg["dataset_name"] = None
    cfg["dataset_kwargs"] = {"data_files": files}
    return cfg


_REDIRECT_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs", *_SPLITS)


@dataclass(frozen=True)
class GroupRedirect:
    """A group whose members read local data: built by :func:`load_specs` for each run, because
    lm-eval 0.4.13 cannot take a group as a config dict (``TaskManager._load_spec`` hands the
    whole dict to every member as overrides, so the group's own keys, e.g.
    ``aggregate_metric_list``, reach ``TaskConfig`` and fail)."""

    name: str
    overrides: dict


def load_specs(specs: list, manager) -> list:
    """``specs`` (from :func:`task_specs`) as lm-eval's ``simple_evaluate`` takes them: a fresh
    ``Group`` object for each :class:`GroupRedirect` (the group's own YAML, the overrides reaching
    each member), everything else as it is."""
    out = []
    for spec in specs:
        if isinstance(spec, GroupRedirect):
            # the same call lm-eval makes for a group name, plus the overrides (private API of the
            # pinned lm-eval 0.4.13: the public load() passes no overrides for a name)
            out.append(manager._factory.build(manager.task_index[spec.name], overrides=dict(spec.overrides),
                                              registry=manager._index))
        else:
            out.append(spec)
    return out


def task_specs(tasks: list[str], manager, sources: dict | None = None, num_fewshot: int | None = None,
               task_config: dict | None = None) -> list:
    """What to hand to lm-eval for ``tasks``: a task's name, or — where ``sources`` names local
    data for it — its full config with the data redirected (see the module docstring).

    ``task_config`` (``{task: {key: value}}``) replaces keys of a task's YAML config (e.g.
    ``{"xquad_de": {"generation_kwargs": {"until": ["\\n"], "max_gen_toks": 16}}}``); a value
    replaces the YAML's whole value. For a group the keys reach every member. The data keys are
    ``sources``' business and are refused here."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    sources = dict(sources or {})
    unknown = [t for t in tasks if t not in manager.task_index]
    if unknown:
        close = [n for n in manager.all_tasks if unknown[0].split("_")[0] in n][:8]
        raise LangNeuronsError(f"unknown lm-eval task {unknown[0]!r}"
                               + (f"; similar names: {choices(close)}" if close else "")
                               + f" (the package's own: {choices(builtin_tasks()[:6])}, …)")
    stray = [k for k in sources if k not in tasks]
    if stray:
        raise LangNeuronsError(f"sources names {stray[0]!r}, which is not among the tasks run: {choices(tasks)}")
    extra = _check_task_config(task_config, tasks)
    specs: list = []
    for name in tasks:
        if name not in sources and name not in extra:
            specs.append(name)
            continue
        files = _check_files(name, sources[name]) if name in sources else None
        entry = manager.task_index[name]
        if entry.yaml_path is None:
            raise LangNeuronsError(f"task {name!r} has no YAML definition whose data or keys could be replaced")
        cfg = load_yaml(entry.yaml_path, resolve_func=True)
        if entry.kind == Kind.GROUP:
            data = _group_overrides(name, cfg, files, manager, num_fewshot) if files is not None else {}
            specs.append(GroupRedirect(name, {**data, **extra.get(name, {})}))
        elif entry.kind == Kind.TASK:
            cfg = {**cfg, "task": name}
            cfg = redirected(cfg, files, name, num_fewshot) if files is not None else cfg
            specs.append({**cfg, **extra.get(name, {})})
        else:
            raise LangNeuronsError(f"{name!r} is an lm-eval tag (a set of tasks); redirect its tasks one by one")
    return specs


def _check_task_config(task_config, tasks: list[str]) -> dict:
    if task_config is None:
        return {}
    if not isinstance(task_config, dict) or not all(isinstance(v, dict) for v in task_config.values()):
        raise LangNeuronsError(f"task_config must map task names to {{key: value}} dicts, got {task_config!r}")
    stray = [k for k in task_config if k not in tasks]
    if stray:
        raise LangNeuronsError(f"task_config names {stray[0]!r}, which is not among the tasks run: {choices(tasks)}")
    for name, keys in task_config.items():
        data = [k for k in keys if k in ("dataset_path", "dataset_name", "dataset_kwargs", "custom_dataset", "task",
                                         "group")]
        if data:
            raise LangNeuronsError(f"task_config[{name!r}] sets {data[0]!r}; local data goes through sources=, "
                                   "and a task's name cannot be changed")
    return task_config


def _group_overrides(name: str, cfg: dict, files: dict[str, str], manager, num_fewshot) -> dict:
    """The data redirect every member of group ``name`` receives: the same for all members (lm-eval
    hands one set of overrides to each), so their splits must agree."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    found = {}
    for member in cfg.get("task") or []:
        entry = manager.task_index.get(member) if isinstance(member, str) else None
        if entry is None or entry.kind != Kind.TASK or entry.yaml_path is None:
            raise LangNeuronsError(f"group {name!r} has a member ({member!r}) that is not a task with a YAML file; "
                                   "redirect its tasks one by one")
        red = redirected({**load_yaml(entry.yaml_path, resolve_func=True), "task": member}, files, member,
                         num_fewshot)
        found[member] = {k: red.get(k) for k in _REDIRECT_KEYS}
    if not found:
        raise LangNeuronsError(f"group {name!r} lists no member tasks")
    first = next(iter(found.values()))
    if any(v != first for v in found.values()):
        raise LangNeuronsError(f"the members of group {name!r} read different splits; redirect them one by one")
    return first


def builtin_tasks() -> list[str]:
    """The names of the package's own tasks, from the shipped YAML files."""
    return sorted(p.stem for p in TASKS_DIR.rglob("tlln_*.yaml"))
