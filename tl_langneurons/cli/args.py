"""Arguments as the command line spells them: comma-separated lists, flags, positions. Each check
raises :class:`~tl_langneurons.LangNeuronsError` naming the flag, before anything is loaded."""

import json
import math
import re
from contextlib import contextmanager

from ..errors import LangNeuronsError


def parse_languages(value: str | None) -> list[str] | None:
    if value is None:
        return None
    langs = [x.strip() for x in value.split(",") if x.strip()]
    if not langs:
        raise LangNeuronsError(f"--languages {value!r} names no language; give a comma-separated list like en,de,fr")
    return langs


def positive(name: str, value):
    if value is not None and value < 1:
        raise LangNeuronsError(f"{name} must be a positive integer, got {value}")
    return value


def parse_floats(name: str, value: str) -> list[float]:
    """A comma-separated list of finite numbers, e.g. ``4,16,64``."""
    parts = [x.strip() for x in value.split(",") if x.strip()]
    out = []
    for x in parts:
        try:
            f = float(x)
        except ValueError:
            f = math.nan
        if not math.isfinite(f):
            raise LangNeuronsError(f"{name}: {x!r} is not a finite number; give a comma-separated list like 4,16,64")
        out.append(f)
    if not out:
        raise LangNeuronsError(f"{name} {value!r} names no number; give a comma-separated list like 4,16,64")
    return out


def finite(name: str, value):
    if value is not None and not math.isfinite(value):
        raise LangNeuronsError(f"{name} must be a finite number, got {value}")
    return value




def control(value: str) -> str | None:
    return None if value == "none" else value


def positions_arg(value: str | None):
    """``all``/``prompt``/``generated``/``last`` or a comma-separated list of positions ≥ 0."""
    if value is None:
        return None
    from ..intervene import POSITIONS

    if value in POSITIONS:
        return value
    try:
        pos = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        pos = []
    if not pos or min(pos) < 0:
        raise LangNeuronsError(f"unknown --positions {value!r}; allowed: {', '.join(POSITIONS)} or a "
                               "comma-separated list of positions ≥ 0")
    return pos




def json_object(name: str, value: str, example: str) -> dict:
    """A JSON object given inline or as the path of a file holding one."""
    from pathlib import Path

    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        out = json.loads(text)
    except json.JSONDecodeError as e:
        raise LangNeuronsError(f"{name} {value!r} is neither a JSON object nor a file holding one ({e.msg}); "
                               f"e.g. {example}") from None
    if not isinstance(out, dict):
        raise LangNeuronsError(f"{name} must be a JSON object, e.g. {example}; got {value!r}")
    return out


def placement(args) -> dict:
    """``load_model``'s placement keywords from ``--device`` or ``--device-map`` / ``--max-memory`` /
    ``--offload-folder``, checked at once (:func:`~tl_langneurons.placement.check_placement`)."""
    from ..placement import STRATEGIES, check_placement

    dm = getattr(args, "device_map", None)
    if dm is not None and dm not in STRATEGIES:
        dm = json_object("--device-map", dm, '{"model.embed_tokens": 0, "model.layers.0": 0, ...}')
    mm = getattr(args, "max_memory", None)
    if mm is not None:
        # JSON object keys are text: a GPU index is written "0"
        mm = {int(k) if k.isdigit() else k: v
              for k, v in json_object("--max-memory", mm, '{"0": "70GiB", "1": "70GiB"}').items()}
    # the messages name the Python arguments (device_map=, max_memory=), the flags' own spelling
    return check_placement(args.device, dm, mm, getattr(args, "offload_folder", None))


def flag(name: str) -> str:
    """The flag of an option name: ``top_rate`` → ``--top-rate``."""
    return "--" + name.replace("_", "-")


def config_shape(model: str) -> dict:
    """``{"n_layers", "d_mlp"}`` of a model read from its ``config.json`` without loading (or
    converting, or downloading) anything; ``{}`` where that is not possible (a hub id, a GGUF file, a
    built-in model not yet converted, an architecture whose keys are not these)."""
    from ..sources import BUILTIN, resolve_source

    if model != "builtin" and model in BUILTIN:
        return {}
    kind, where = resolve_source(model)
    if kind != "local":
        return {}
    from pathlib import Path

    try:
        cfg = json.loads((Path(where) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    cfg = cfg.get("text_config") or cfg  # a multimodal model's language part
    out = {}
    n_layers = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    if isinstance(n_layers, int):
        out["n_layers"] = n_layers
    d_mlp = cfg.get("intermediate_size", cfg.get("n_inner"))
    if d_mlp is None and isinstance(cfg.get("n_embd"), int) and "n_inner" in cfg:
        d_mlp = 4 * cfg["n_embd"]  # GPT-2: n_inner None means 4 x the width
    if isinstance(d_mlp, int):
        out["d_mlp"] = d_mlp
    return out


def check_model_before_loading(model: str, recorded: dict, what: str) -> dict:
    """Refuse an artifact (``recorded``: the model fingerprint it stores) made on another model than
    ``--model`` before the model is loaded, where that can be told without loading it: two different
    built-in models, or another depth or MLP width in ``--model``'s config.json. (Same-shaped
    models with other weights are told apart by the weights hash once it is loaded.) Returns what
    was read of ``--model``'s shape."""
    from ..sources import BUILTIN

    name = recorded.get("name")
    if name in BUILTIN and model in BUILTIN and name != model:
        raise LangNeuronsError(f"{what} was made on {name!r}, not on --model {model!r}; "
                               f"run with --model {name}")
    shape = config_shape(model)
    for key, label in (("n_layers", "layers"), ("d_mlp", "MLP neurons per layer")):
        if key in shape and isinstance(recorded.get(key), int) and shape[key] != recorded[key]:
            raise LangNeuronsError(f"{what} was made on {name!r} ({recorded[key]} {label}), not on --model {model!r} "
                                   f"({shape[key]} {label})")
    return shape


@contextmanager
def flags_in_errors(names):
    """Inside: a :class:`~tl_langneurons.LangNeuronsError` that names one of ``names`` (Python
    argument names; a dict maps a name to its option's) names its flag instead: ``top_rate must be
    in (0, 1]`` → ``--top-rate must be in (0, 1]``."""
    names = names if isinstance(names, dict) else {n: n for n in names}
    try:
        yield
    except LangNeuronsError as e:
        message = str(e)
        for python, option in sorted(names.items(), key=lambda kv: -len(kv[0])):
            # only where the name is what a check is about ("top_rate must be ...", "n=7"): a plain word
            # like "languages" elsewhere in a message stays a word
            message = re.sub(rf"(?<![\w-]){re.escape(python)}(?=\s+must\b|\s*=)", flag(option), message)
        raise LangNeuronsError(message) from None


# ---------------------------------------------------------------------------------------------
# The output contract (docs/outputs.md): every command writing a folder opens it here, before any work


# Options naming input files or folders: the resume key holds their content's hash, not their path.
INPUT_PATHS = ("neurons", "stats", "prompts", "facts", "sources", "include_path", "corpus", "train")
# what does not change the units of work: where they go, how the run is resumed, and the metric
# the summary is read at (a mistaken --metric is fixed with --resume --metric X, losing nothing)
NOT_KEYED = ("out", "overwrite", "resume", "func", "command", "checkpoint_every", "metric")


def result_folder(args):
    """``--out`` opened under the contract: an existing file, an unwritable place, a folder holding
    a result (without --overwrite/--resume) are refused now, before anything is loaded."""
    from .._io import ResultFolder

    return ResultFolder(args.out, overwrite=getattr(args, "overwrite", False),
                        resume=getattr(args, "resume", False)).open()


def run_key(args, **inputs) -> dict:
    """What a command's result depends on: every option (input paths by their content) and
    ``inputs`` (the model's weights hash, the corpus content's hash...)."""
    from .._io import path_hash

    options = {}
    for k, v in sorted(vars(args).items()):
        if k in NOT_KEYED or callable(v):
            continue
        if k in INPUT_PATHS and isinstance(v, str):
            h = path_hash(v)
            v = {"sha256": h} if h is not None else v
        options[k] = v
    return {"command": getattr(args, "command", None), "options": options, **inputs}


def checkpoint_store(args, rf, **inputs):
    """The command's :class:`~tl_langneurons.resume.Checkpointed` store in the result folder."""
    from ..resume import Checkpointed

    return Checkpointed(rf.resume_dir, run_key(args, **inputs), resume=getattr(args, "resume", False),
                        what=getattr(args, "command", None) or "run")
