"""The one set of argument checks: each returns the normalised value or raises
:class:`~.errors.LangNeuronsError` naming the bad value and what is allowed.

``bool`` is an ``int`` subclass in Python; ``True`` as a count, an index or a layer is always a
mistake, so every integer check here refuses it (and every number check too).
"""

import math
import numbers
from collections.abc import Iterable

from .errors import LangNeuronsError, choices


def is_int(v) -> bool:
    # `type(v) is int` first: the ABC check is slow, and neuron sets hold tens of thousands of pairs
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def integer(name: str, v, lo: int | None = None, hi: int | None = None, *, allow_none: bool = False,
            even: bool = False) -> int | None:
    """An integer in ``[lo, hi]`` (either bound optional), even if ``even``."""
    if v is None and allow_none:
        return None
    if is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi) and not (even and v % 2):
        return int(v)
    if lo == 1 and hi is None and not even:
        what = "a positive integer"
    else:
        span = f" in [{lo}, {hi}]" if lo is not None and hi is not None else (
            f" ≥ {lo}" if lo is not None else (f" ≤ {hi}" if hi is not None else ""))
        what = ("an even integer" if even else "an integer") + span
    raise LangNeuronsError(f"{name} must be {what}{' or None' if allow_none else ''}, got {v!r}")


def positive_int(name: str, v, *, allow_none: bool = False) -> int | None:
    return integer(name, v, 1, allow_none=allow_none)


def number(name: str, v, *, allow_none: bool = False) -> float | None:
    """A finite real number (not a bool)."""
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise LangNeuronsError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def positive(name: str, v, *, allow_none: bool = False) -> float | None:
    """A finite number > 0."""
    x = number(name, v, allow_none=allow_none)
    if x is not None and not x > 0:
        raise LangNeuronsError(f"{name} must be > 0, got {v!r}")
    return x


def rate(name: str, v) -> float:
    """A number in (0, 1]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 < float(v) <= 1.0:
        raise LangNeuronsError(f"{name} must be a number in (0, 1], got {v!r}")
    return float(v)


def boolean(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise LangNeuronsError(f"{name} must be True or False, got {v!r}")
    return v


def one_of(name: str, v, allowed: Iterable):
    allowed = tuple(allowed)
    if v not in allowed:
        raise LangNeuronsError(f"unknown {name} {v!r}; allowed: {choices(allowed)}")
    return v


def numbers_list(name: str, v) -> list[float]:
    """One finite number or a non-empty list of them."""
    values = [v] if isinstance(v, numbers.Real) and not isinstance(v, bool) else list(v)
    if not values:
        raise LangNeuronsError(f"{name} must hold at least one value")
    return [number(name, x) for x in values]


def texts_of(corpus) -> dict[str, list[str]]:
    """The ``{language: [sentences]}`` of a :class:`~.corpus.Corpus` or of a plain dict."""
    from .corpus import Corpus  # corpus imports this module

    if isinstance(corpus, Corpus):
        return corpus.texts
    if isinstance(corpus, dict):
        return corpus
    raise LangNeuronsError(f"corpus must be a Corpus or a dict of sentence lists, got {type(corpus).__name__}")


def languages(requested, available, what: str) -> list[str]:
    """``requested`` (a list or a comma-separated string; ``None`` = all of ``available``), each
    checked against ``available`` (``what`` names where they were looked for)."""
    available = list(available)
    if requested is None:
        return available
    if isinstance(requested, str):
        requested = [x.strip() for x in requested.split(",") if x.strip()]
    out = list(requested)
    if not out:
        raise LangNeuronsError(f"no languages given; {what} has: {choices(available)}")
    missing = [k for k in out if k not in available]
    if missing:
        raise LangNeuronsError(f"language {missing[0]!r} is not in {what}; available: {choices(available)}")
    return out
