"""Finding lm-eval tasks: lm-eval's own, the package's shipped ones, and local copies of their data.

The package's tasks (``tlln_cloze_<lang>``, ``tlln_translate_<src>_<tgt>``, ``tlln_flores_<src>_<tgt>``)
are ordinary lm-eval YAML files under :data:`TASKS_DIR`; lm-eval's own
``TaskManager(include_path=TASKS_DIR)`` finds them, so ``lm_eval --include_path`` does too.

``sources`` redirects a task's data to local files without touching its definition: the task's own
YAML (templates, metrics, splits, ``process_docs``) is loaded by lm-eval and only the dataset
location is replaced — ``dataset_path`` becomes the ``datasets`` loader for the files' format
(``json``, ``parquet``, ``csv``) and ``dataset_kwargs`` its ``data_files``. For a group (e.g.
``include_base_44_albanian``) the redirect applies to each member task. Tasks whose data comes from
a ``custom_dataset`` function (the FLORES+ pairs) receive the files as ``data_files=``.
"""

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


def redirected(config: dict, files: dict[str, str]) -> dict:
    """``config`` (a task's full YAML config) with its data read from ``files`` ({split: path})."""
    cfg = dict(config)
    if cfg.get("custom_dataset") is not None:
        cfg["dataset_kwargs"] = {**(cfg.get("dataset_kwargs") or {}), "data_files": files}
        return cfg
    cfg["dataset_path"] = _loader(files)
    cfg["dataset_name"] = None
    cfg["dataset_kwargs"] = {"data_files": files}
    return cfg


def task_specs(tasks: list[str], manager, sources: dict | None = None) -> list:
    """What to hand to lm-eval for ``tasks``: a task's name, or — where ``sources`` names local
    data for it — its full config with the data redirected (see the module docstring)."""
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
    specs: list = []
    for name in tasks:
        if name not in sources:
            specs.append(name)
            continue
        files = _check_files(name, sources[name])
        entry = manager.task_index[name]
        if entry.yaml_path is None:
            raise LangNeuronsError(f"task {name!r} has no YAML definition whose data could be redirected")
        cfg = load_yaml(entry.yaml_path, resolve_func=True)
        if entry.kind == Kind.GROUP:
            # the group's own keys stay; a non-group key is an override every member receives
            probe = redirected({"custom_dataset": None}, files)
            specs.append({**cfg, "group": name, **{k: v for k, v in probe.items() if k != "custom_dataset"}})
        elif entry.kind == Kind.TASK:
            specs.append(redirected({**cfg, "task": name}, files))
        else:
            raise LangNeuronsError(f"{name!r} is an lm-eval tag (a set of tasks); redirect its tasks one by one")
    return specs


def builtin_tasks() -> list[str]:
    """The names of the package's own tasks, from the shipped YAML files."""
    return sorted(p.stem for p in TASKS_DIR.rglob("tlln_*.yaml"))
