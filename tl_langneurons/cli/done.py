"""How every command ends: its few headline numbers (stdout), then where the full result is and the
time taken (stderr). The full result — every number — stays in the files; nothing long is printed."""

import sys
import time

_started = time.monotonic()


def start() -> None:
    """The clock of :func:`finish` (called by :func:`~tl_langneurons.cli.main` before parsing)."""
    global _started
    _started = time.monotonic()


def elapsed() -> str:
    from ..progress import duration

    return duration(time.monotonic() - _started)


def finish(lines: list[str], where: str) -> int:
    """Print ``lines`` (the headline numbers) and ``where`` the result is, with the time taken."""
    for line in lines:
        print(line)
    print(f"{where}; took {elapsed()}", file=sys.stderr)
    return 0
