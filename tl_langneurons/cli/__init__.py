"""The command line: ``tl-langneurons <command>`` (also ``python -m tl_langneurons``). Thin: it parses
(:mod:`.parser`, :mod:`.args`), calls the Python API (:mod:`.find`, :mod:`.measure`), and prints. A
:class:`~tl_langneurons.LangNeuronsError` is printed as one line and exits 2."""

import sys

from ..errors import LangNeuronsError
from .args import parse_floats, parse_languages
from .done import start
from .parser import build_parser

__all__ = ["build_parser", "main", "parse_floats", "parse_languages"]


# The library's messages name its Python arguments; a few name a setting the command line spells as
# a flag. The commands check these before calling the library; this is the backstop.
_FLAG_SPELLING = {"sentence_means=True": "--sentence-means", "histogram_edges=...": "--histograms",
                  "use greedy=True": "use --greedy"}


def _as_flags(message: str) -> str:
    for python, flag in _FLAG_SPELLING.items():
        message = message.replace(python, flag)
    return message


def _plain_log() -> None:
    """Not on a terminal (a log file, a pipe): the libraries' own progress bars (transformers'
    weight loading and GGUF conversion, the hub's downloads, datasets') would write carriage returns
    into the log; the package's own bars print plain lines there (:mod:`..progress`). Set before
    those libraries are imported, which is when they read it."""
    import os

    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    start()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _plain_log()
        return args.func(args)
    except LangNeuronsError as e:
        print(f"tl-langneurons: error: {_as_flags(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
