"""Files: atomic writes (readers see the old or the new content, never half of it), strict JSON,
CSV tables, the output contract of every command (:class:`ResultFolder`), names that may become
paths (:func:`safe_name`, :func:`safe_join`), and the package version recorded in every artifact.

The output contract (docs/outputs.md): a command's result folder is written as a unit. The command
writes into a hidden sibling ``.<name>.partial/`` and renames it into place when everything is
written, so a reader — or a kill at any moment — sees the old result or the new one, never a mix,
and a reused folder never shows a file of another run. An existing non-empty ``--out`` is refused
unless the user says ``--overwrite`` (replace it whole) or ``--resume`` (continue the interrupted
run whose completed units of work, :class:`~.resume.Checkpointed`, wait in the partial folder).
"""

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LangNeuronsError


def package_version() -> str:
    from . import __version__

    return __version__


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def jsonable(v):
    """numpy scalars → Python numbers, NaN/inf → None (strict JSON has no NaN), tuples → lists."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Strict JSON (NaN/inf as null), UTF-8, atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file"):
    """Parse a JSON file; a missing or malformed one is a user error naming the path."""
    p = Path(path)
    if not p.is_file():
        raise LangNeuronsError(f"no {what} at {str(p)!r}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LangNeuronsError(f"{str(p)!r} is not valid JSON: {e}") from None


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


# A name that becomes part of a path (a language code, a task name, a run name): letters, digits
# and ``_ . + @ -``, starting with a letter or digit, so never a separator, never ``..``, never
# hidden, never empty. ISO codes (``en``, ``zh-Hans``, ``eng_Latn``) and lm-eval task names fit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@-]{0,127}")


def safe_name(what: str, value) -> str:
    """``value`` if it can be one component of a path, else a :class:`LangNeuronsError`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise LangNeuronsError(f"{what} {value!r} is not a valid name: use letters, digits and _ . + @ - "
                               "(starting with a letter or digit, no '..', at most 128 characters)")
    return value


def safe_join(root: str | os.PathLike, *parts: str, what: str = "name") -> Path:
    """``root/part/…`` with every part a :func:`safe_name`, checked to stay inside ``root``."""
    root = Path(root)
    path = root.joinpath(*(safe_name(what, p) for p in parts))
    if not path.resolve().is_relative_to(root.resolve()):  # a symlink inside root pointing out
        raise LangNeuronsError(f"{str(path)!r} would be written outside {str(root)!r}")
    return path


def check_out_dir(out: str | os.PathLike) -> Path:
    """The output folder, refused at once if it is an existing file (not after minutes of work)."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise LangNeuronsError(f"output directory {str(d)!r} is an existing file")
    return d


def make_out_dir(out: str | os.PathLike) -> Path:
    """:func:`check_out_dir`, then created."""
    d = check_out_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def texts_hash(texts: dict[str, list[str]]) -> str:
    """The content of a corpus (languages in order, every sentence), hashed: what a resume key holds,
    so a corpus whose files changed under the same path is not taken for the same corpus."""
    h = hashlib.sha256()
    for lang, sentences in texts.items():
        h.update(json.dumps([lang, len(sentences)]).encode())
        for s in sentences:
            h.update(len(s.encode("utf-8")).to_bytes(8, "little"))
            h.update(s.encode("utf-8"))
    return h.hexdigest()


def path_hash(path: str | os.PathLike | None) -> str | None:
    """The content of an input file, or of every file of an input folder (names and bytes)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return sha256(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
            h.update(str(f.relative_to(p)).encode() + b"\0" + sha256(f).encode())
        return h.hexdigest()
    return None


# ---------------------------------------------------------------------------------------------
# The output contract


class ResultFolder:
    """A command's result folder, written as a unit (see the module docstring and docs/outputs.md).

    ``open()`` checks everything before any work: ``out`` not an existing file, its parent writable
    (the partial folder is created there), an existing non-empty ``out`` refused unless
    ``overwrite`` or ``resume``, an interrupted run's partial folder refused unless ``resume`` (or
    ``overwrite``, which discards it). Results are written into :attr:`path`; resumable stages keep
    their completed units in :attr:`resume_dir`. :meth:`commit` renames the finished folder into
    place (a former result is replaced whole). A run that fails before saving any unit leaves
    nothing behind; one that saved units keeps them for ``--resume``.

        with ResultFolder(args.out, overwrite=args.overwrite, resume=args.resume) as rf:
            ...write into rf.path, checkpoint into rf.resume_dir...
            rf.commit()
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, resume: bool = False):
        if overwrite and resume:
            raise LangNeuronsError("give --overwrite (start again, replacing the result) or --resume (continue an "
                                   "interrupted run), not both")
        self.out = Path(out).expanduser()
        self.overwrite, self.resume = bool(overwrite), bool(resume)
        name = self.out.resolve().name
        if not name:
            raise LangNeuronsError(f"--out {str(out)!r} names no folder")
        parent = self.out.resolve().parent
        self.path = parent / f".{name}.partial"
        self.resume_dir = self.path / ".resume"
        self._old = parent / f".{name}.replaced"
        self._committing = parent / f".{name}.committing"
        self.committed = self._opened = False
        self._created: list[Path] = []

    # -- before any work -------------------------------------------------------------------

    def open(self) -> "ResultFolder":
        self._recover()
        out = self.out
        if out.exists() and not out.is_dir():
            raise LangNeuronsError(f"output directory {str(out)!r} is an existing file")
        full = out.is_dir() and any(out.iterdir())
        partial = self.path.is_dir() and any(self.path.iterdir())
        if self.overwrite and partial:
            shutil.rmtree(self.path)
            partial = False
        if partial and not self.resume:
            raise LangNeuronsError(f"an interrupted run into {str(out)!r} left its completed work in "
                                   f"{str(self.path)!r}; give --resume to continue it or --overwrite to discard it")
        if full and not (self.overwrite or self.resume):
            raise LangNeuronsError(f"output directory {str(out)!r} already holds a result; give --overwrite to "
                                   "replace it whole (or another --out)")
        if self.resume and full and not partial:
            raise LangNeuronsError(f"output directory {str(out)!r} holds a finished result and no interrupted run "
                                   "to resume; give --overwrite to run again")
        self._created = [p for p in self.path.parent.resolve().parents if not p.exists()][::-1]
        if not self.path.parent.exists():
            self._created.append(self.path.parent.resolve())
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise LangNeuronsError(f"cannot write the output directory {str(out)!r}: {e.strerror or e}") from None
        self._opened = True
        return self

    def __enter__(self) -> "ResultFolder":
        return self if self._opened else self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        # a run that failed before completing any unit of work leaves nothing behind
        if self._opened and not self.committed and self.path.is_dir() and not self.has_units():
            shutil.rmtree(self.path, ignore_errors=True)
            for d in reversed(self._created):  # the parent folders this run made, if still empty
                try:
                    d.rmdir()
                except OSError:
                    break

    def has_units(self) -> bool:
        """Whether a completed unit of work waits here (a store's key alone is no work)."""
        return self.resume_dir.is_dir() and any(f.is_file() and f.name != "key.json"
                                                for f in self.resume_dir.rglob("*"))

    # -- at the end ------------------------------------------------------------------------

    def commit(self) -> Path:
        """Rename the finished folder into place (the completed units are dropped first)."""
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        if self._old.exists():
            shutil.rmtree(self._old)
        self._committing.write_bytes(b"")  # from here on the partial folder is the result
        if self.out.exists():
            os.replace(self.out, self._old)
        os.replace(self.path, self.out)
        self._committing.unlink()
        shutil.rmtree(self._old, ignore_errors=True)
        self.committed = True
        return self.out

    def _recover(self) -> None:
        """Finish a commit that a kill interrupted between its renames (the marker says the partial
        folder was complete), or put back a former result that a kill left set aside."""
        if self._committing.exists():
            if self.path.is_dir():
                if self.out.exists():
                    os.replace(self.out, self._old)
                os.replace(self.path, self.out)
            self._committing.unlink()
        if self._old.exists():
            if not self.out.exists():
                os.replace(self._old, self.out)
            else:
                shutil.rmtree(self._old, ignore_errors=True)


def result_file(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """The contract for a command whose result is one file (``identify --out n.json``): refused if
    it exists (unless ``overwrite``); its folder created and checked writable now; written atomically."""
    p = Path(out).expanduser()
    if p.is_dir():
        raise LangNeuronsError(f"{str(p)!r} is an existing directory")
    if p.exists() and not overwrite:
        raise LangNeuronsError(f"{str(p)!r} already exists; give --overwrite to replace it")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        probe = p.with_name(f".{p.name}.write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LangNeuronsError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
    return p
