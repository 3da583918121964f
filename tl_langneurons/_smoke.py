"""Smoke-test sizes: with ``TL_LANGNEURONS_SMOKE=1`` in the environment every size is cut to a few
items, so that a command or an example runs in seconds on the built-in model.

This is how the test suite runs the README's and the documentation's code blocks *as written*
(``tests/test_doc_examples.py``): the blocks name the sizes a reader should use, and the test never
edits them. The cuts sit where sizes enter the package — sentences per language when a corpus is
loaded, prompts, generations per prompt and new tokens when steering, documents per lm-eval task — so every command and
function obeys them. A process that applies a cut says so once on stderr: its numbers are not
results.
"""

import os
import sys

ENV = "TL_LANGNEURONS_SMOKE"
SENTENCES = 2  # per language, for any corpus and split
PROMPTS = 2  # steering prompts per target
SAMPLES = 1  # generations per prompt, condition and setting
NEW_TOKENS = 4  # new tokens per generation
DOCUMENTS = 4  # documents per lm-eval task

_warned = False


def active() -> bool:
    return os.environ.get(ENV, "").strip() not in ("", "0")


def cap(value: int | None, limit: int) -> int | None:
    """``value`` cut to ``limit`` when smoke sizes are on (``None``, meaning "all", becomes ``limit``)."""
    if not active() or (value is not None and value <= limit):
        return value
    global _warned
    if not _warned:
        _warned = True
        print(f"{ENV} is set: sizes cut to {SENTENCES} sentences per language, {PROMPTS} prompts, "
              f"{SAMPLES} generation per prompt, {NEW_TOKENS} new tokens, {DOCUMENTS} documents per task; "
              "the numbers are not results",
              file=sys.stderr)
    return limit
