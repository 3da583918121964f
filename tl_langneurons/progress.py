"""Progress of long work: one bar per stage, with the time left, and clean lines in a log.

A *stage* (:func:`stage`) is one piece of work a user waits for — a steering sweep, a perplexity
matrix, a recording — counted in one unit (generations, batches) over its whole extent, so its
estimate of the time left covers the whole stage. The loops inside the functions a stage calls
(one ``generate`` call per batch, one NLL pass per condition) use :func:`track`: inside a stage
they advance its bar by the units they complete and draw nothing of their own (no nested bars, no
"0/1" bar per cell); called alone, outside any stage, a loop has a bar of its own.

On a terminal a stage is a tqdm bar. Elsewhere (a log file, a pipe, a notebook's captured stderr)
it is a plain line every :data:`LOG_EVERY` seconds and one at the end — no carriage returns or
cursor codes. ``TQDM_DISABLE=1`` (as the tests set) or ``progress=False`` silence both.
"""

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

LOG_EVERY = 30.0  # seconds between two progress lines in a log

_current: "Stage | None" = None  # the running stage (work is single-threaded; a stack of one)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


def _silenced() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


class _Lines:
    """A progress bar for logs: ``desc: 120/480 generations (25%), 1m10s, about 3m30s left``."""

    def __init__(self, total: int | None, desc: str, unit: str, stream, every: float):
        self.total, self.desc, self.unit, self.stream, self.every = total, desc, unit, stream, every
        self.n, self.start = 0, time.monotonic()
        self.last = self.start
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every and (self.total is None or self.n < self.total):
            self.last = now
            self._line(now)

    def _line(self, now: float, end: bool = False) -> None:
        elapsed = now - self.start
        if self.total:
            text = f"{self.n}/{self.total} {_plural(self.unit)} ({self.n / self.total:.0%}), {duration(elapsed)}"
            if not end and self.n:
                text += f", about {duration(elapsed * (self.total - self.n) / self.n)} left"
        else:
            text = f"{self.n} {_plural(self.unit)}, {duration(elapsed)}"
        print(f"{self.desc}: {text}{self.postfix}", file=self.stream, flush=True)

    def close(self) -> None:
        self._line(time.monotonic(), end=True)


class Stage:
    """One bar over a whole stage of work, counted in ``unit``."""

    def __init__(self, desc: str, total: int | None, unit: str, enabled: bool, stream=None):
        self.unit = unit
        self.bar = None
        if not enabled or _silenced():
            return
        stream = stream if stream is not None else sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=f" {_plural(unit)}", file=stream, dynamic_ncols=True)
        else:
            self.bar = _Lines(total, desc, unit, stream, LOG_EVERY)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def note(self, **values) -> None:
        """Values shown after the count (e.g. the last loss)."""
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Within:
    """A stage inside a running one: it advances the running stage where both count the same unit."""

    def __init__(self, outer: Stage, unit: str):
        self.outer, self.unit = outer, unit

    def advance(self, n: int = 1) -> None:
        if self.unit == self.outer.unit:
            self.outer.advance(n)

    def note(self, **values) -> None:
        if self.unit == self.outer.unit:
            self.outer.note(**values)


@contextmanager
def stage(desc: str, total: int | None, unit: str = "step", enabled: bool = True, stream=None):
    """One bar for a stage of ``total`` ``unit``\\ s; the :func:`track` loops inside advance it.
    Inside another stage it is part of that one (its bar counts on; no second bar)."""
    global _current
    if _current is not None:
        yield _Within(_current, unit)
        return
    s = Stage(desc, total, unit, enabled, stream)
    _current = s
    try:
        yield s
    finally:
        _current = None
        s.close()


def _one(item) -> int:
    return 1


def track(iterable: Iterable, desc: str, enabled: bool = True, unit: str = "step", total: int | None = None,
          size: Callable = _one) -> Iterator:
    """Iterate over ``iterable``, ``size(item)`` units of work per item. Inside a stage counted in
    ``unit``, advance it after each item; inside a stage counted in another unit, silently (the
    stage counts the work in its own units); outside any stage, with a bar of its own."""
    if _current is not None:
        s = _current
        for item in iterable:
            yield item
            if s.unit == unit:
                s.advance(size(item))
        return
    if total is None and hasattr(iterable, "__len__"):
        total = sum(size(x) for x in iterable) if size is not _one else len(iterable)
    # a bar of its own, not made the running stage: a generator abandoned by an exception is closed
    # only when it is collected, and a stage left running would silence every later bar
    s = Stage(desc, total, unit, enabled)
    try:
        for item in iterable:
            yield item
            s.advance(size(item))
    finally:
        s.close()
