"""Resuming a long stage exactly: :class:`Checkpointed`, a store of its completed units of work.

A stage is a loop over units of work (a condition x language of the perplexity matrix, a batch of
generations, a task under one condition, a fine-tuning run and its optimizer steps). Wrapping each
unit in :meth:`Checkpointed.unit` makes the stage resumable, in a line::

    store = Checkpointed(folder, key={"model": weights_hash, "corpus": texts_hash(texts), **options},
                         resume=resume)
    for lang in languages:
        row = store.unit(f"ablate {lang}", lambda: measure(lang))  # computed once, or read back

* A unit's value is JSON (numbers, strings, lists, dicts; NaN and infinities kept) and optionally
  tensors (``tensors=True``: the function returns ``(value, {name: tensor})``; safetensors keep
  the dtype and every bit). :meth:`unit` returns the value *as read back from disk* also when it has
  just computed it, so a resumed run and an uninterrupted one build their result from the same
  bytes: they are equal bit for bit by construction.
* A unit that draws random numbers saves the generator's state with its value (:func:`rng_state`)
  and the next unit starts from it (:func:`set_rng_state`): seeded sampling resumes exactly.
* State that is replaced rather than added to (a training run's weights and optimizer after step
  *n*) is :meth:`save` / :meth:`load` under one name, each write atomic.
* ``key`` holds everything the result depends on (the model's weights hash, the corpus content's
  hash, the input files' hashes, every option). Resuming with a different key is refused, with a
  line naming what changed. :meth:`section` opens a sub-store with its own key (a stage inside a
  pipeline: the demo's perplexity matrix, its steering).
* Every file is written to a temporary name and renamed; a unit file that cannot be read (a torn
  or damaged write) is refused cleanly.
* Tests kill a stage deterministically: with ``TL_LANGNEURONS_KILL_AFTER_UNITS=N`` in the
  environment the process sends itself SIGKILL right after its N-th unit has landed on disk.

A command keeps its store in :attr:`~._io.ResultFolder.resume_dir`, which ``--resume`` reopens and
the final commit drops (docs/outputs.md).
"""

import base64
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from ._io import atomic_write_text, jsonable, sha256
from .errors import LangNeuronsError

KILL_ENV = "TL_LANGNEURONS_KILL_AFTER_UNITS"
_saved = 0  # units saved by this process (the kill switch counts them)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after_save() -> None:
    global _saved
    _saved += 1
    n = os.environ.get(KILL_ENV)
    if n and n.isdigit() and _saved == int(n):
        _kill()


def _plain(v):
    """JSON-able, keeping NaN and infinities (strict-JSON writers turn them into null; a unit must
    read back exactly what was computed)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, torch.Tensor) and getattr(v, "ndim", 1) == 0:
        return v.item()  # numpy scalars
    return v


def _dumps(v) -> str:
    return json.dumps(_plain(v), ensure_ascii=False, default=str, allow_nan=True, sort_keys=False)


def normal_key(key: dict) -> dict:
    """The key as JSON reads it back (tuples → lists, numpy → Python), so stored and fresh compare."""
    return json.loads(json.dumps(jsonable(key), default=str, sort_keys=True))


def key_changes(old, new, path: str = "") -> list[str]:
    """What differs between two keys, as ``path (old → new)`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(f"{sub} (was {_short(old[k])}, now absent)")
            elif k not in old:
                out.append(f"{sub} (was absent, now {_short(new[k])})")
            else:
                out += key_changes(old[k], new[k], sub)
        return out
    return [] if old == new else [f"{path or 'key'} ({_short(old)} → {_short(new)})"]


def _short(v) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 40 else s[:37] + "..."


def rng_state(devices=()) -> dict:
    """torch's global generator state (the CPU's and that of each CUDA device index in ``devices``),
    as JSON: saved with a unit of seeded sampling so the next unit continues the same stream."""
    out = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    for d in devices:
        out[f"cuda:{d}"] = base64.b64encode(torch.cuda.get_rng_state(d).numpy().tobytes()).decode()
    return out


def set_rng_state(state: dict) -> None:
    for where, b64 in state.items():
        t = torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8)
        if where == "cpu":
            torch.set_rng_state(t)
        else:
            torch.cuda.set_rng_state(t, int(where.split(":")[1]))


class Checkpointed:
    """The completed units of one stage, in ``folder`` (see the module docstring).

    Args:
        folder: where the units live (created).
        key: everything the stage's result depends on (JSON-able).
        resume: ``False`` — start afresh (units already in ``folder`` are dropped); ``True`` —
            continue from them, after checking the key.
        what: the stage's name in messages (``"ppl"``, ``"steer"``…).
    """

    def __init__(self, folder: str | os.PathLike, key: dict, resume: bool = False, what: str = "run"):
        self.folder, self.what, self.resume = Path(folder), what, bool(resume)
        self.key = normal_key(key)
        kp = self.folder / "key.json"
        if self.resume and kp.is_file():
            try:
                old = json.loads(kp.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                raise LangNeuronsError(f"the checkpoint of the interrupted {what} in {str(self.folder)!r} is damaged "
                                       "(key.json unreadable); give --overwrite to start again") from None
            changes = key_changes(old, self.key)
            if changes:
                raise LangNeuronsError(f"cannot resume the interrupted {what}: {'; '.join(changes[:4])}"
                                       f"{' ...' if len(changes) > 4 else ''} changed since it ran; resume with the "
                                       "same inputs and options, or give --overwrite to start again")
        elif self.folder.is_dir() and any(self.folder.iterdir()):
            if not kp.is_file():  # never empty a folder that is not a store
                raise LangNeuronsError(f"{str(self.folder)!r} is not empty and holds no checkpoint; give an empty "
                                       "or new folder")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(kp, json.dumps(self.key, ensure_ascii=False, sort_keys=True, indent=1) + "\n")

    # -- structure -------------------------------------------------------------------------

    def section(self, name: str, key: dict | None = None) -> "Checkpointed":
        """A sub-store (``name``'s units, checked against its own ``key`` too)."""
        return Checkpointed(self._file(name, ""), key or {}, resume=self.resume, what=f"{self.what} {name}")

    def _file(self, name: str, suffix: str) -> Path:
        return self.folder / (hashlib.sha1(name.encode()).hexdigest()[:20] + suffix)

    # -- units -----------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return self._file(name, ".json").is_file()

    def done(self, names) -> int:
        """How many of ``names`` are complete (where a resumed progress bar starts)."""
        return sum(1 for n in names if n in self)

    def announce(self, names) -> int:
        """Say where a resumed stage starts (one line on stderr); the number of units done."""
        names = list(names)
        n = self.done(names)
        if self.resume and n:
            import sys

            print(f"resuming {self.what}: {n} of {len(names)} units already done", file=sys.stderr)
        return n

    def save(self, name: str, value: Any, tensors: dict | None = None) -> None:
        """Store (or replace) ``name``: tensors first, then the JSON naming their checksum, each
        renamed into place, so a kill leaves the old unit or the new one."""
        record = {"name": name, "value": value, "tensors_sha256": None}
        if tensors is not None:
            from safetensors.torch import save_file

            tp = self._file(name, ".safetensors")
            tmp = tp.with_name(tp.name + ".tmp")
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            record["tensors_sha256"] = sha256(tmp)
            os.replace(tmp, tp)
        atomic_write_text(self._file(name, ".json"), _dumps(record) + "\n")
        _after_save()

    def load(self, name: str) -> tuple[Any, dict | None]:
        """``(value, tensors or None)`` of a stored unit."""
        jp = self._file(name, ".json")
        damaged = LangNeuronsError(f"the checkpoint of the interrupted {self.what} in {str(self.folder)!r} is damaged "
                                   f"(unit {name!r}); give --overwrite to start again")
        try:
            record = json.loads(jp.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise damaged from None
        if not isinstance(record, dict) or record.get("name") != name or "value" not in record:
            raise damaged
        tensors = None
        if record.get("tensors_sha256") is not None:
            from safetensors.torch import load_file

            tp = self._file(name, ".safetensors")
            if not tp.is_file() or sha256(tp) != record["tensors_sha256"]:
                raise damaged
            tensors = load_file(str(tp))
        return record["value"], tensors

    def unit(self, name: str, compute: Callable[[], Any], tensors: bool = False):
        """The value of unit ``name``: read back if it is complete, else computed, saved and read
        back. With ``tensors=True`` ``compute`` returns ``(value, {name: tensor})`` and so does this."""
        if name not in self:
            out = compute()
            value, ts = out if tensors else (out, None)
            self.save(name, value, ts)
        value, ts = self.load(name)
        return (value, ts) if tensors else value


def _canon(v):
    """``v`` as plain JSON for hashing: tensors by their bytes' digest, dataclasses (neuron sets,
    statistics, interventions) field by field."""
    import dataclasses

    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return {"tensor": h.hexdigest()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"type": type(v).__name__, **{f.name: _canon(getattr(v, f.name)) for f in dataclasses.fields(v)}}
    if isinstance(v, dict):
        return {str(k): _canon(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_canon(x) for x in v]
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, (int, float)):  # numpy arrays
        return _canon(torch.as_tensor(v))
    return v


def content_hash(obj) -> str:
    """The hash of what a result depends on: a neuron set, statistics, an intervention, a tensor,
    or plain JSON (what a resume key holds instead of the object)."""
    return hashlib.sha256(_dumps(_canon(obj)).encode()).hexdigest()


def open_store(checkpoint, section: str, key: dict) -> "Checkpointed | None":
    """``checkpoint.section(section, key)``, or ``None`` where the caller passed no store (the
    one-line idiom of a resumable API function)."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, Checkpointed):
        raise LangNeuronsError(f"checkpoint must be a Checkpointed store or None, got {type(checkpoint).__name__}")
    return checkpoint.section(section, key)


def run_unit(store: "Checkpointed | None", name: str, compute: Callable[[], Any], tensors: bool = False):
    """:meth:`Checkpointed.unit` where there is a store, else ``compute()`` round-tripped through
    JSON the same way (so a run with a store and one without give the same values)."""
    if store is not None:
        return store.unit(name, compute, tensors)
    out = compute()
    value, ts = out if tensors else (out, None)
    value = json.loads(_dumps(value))
    if tensors:
        return value, {k: v.detach().cpu().contiguous() for k, v in ts.items()}
    return value


__all__ = ["Checkpointed", "KILL_ENV", "key_changes", "open_store", "rng_state", "run_unit", "set_rng_state"]
