"""Files: atomic writes (readers see the old or the new content, never half of it), strict JSON,
CSV tables, output folders, and the package version recorded in every artifact."""

import hashlib
import json
import math
import os
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
