"""Data loader and scoring of the tlln_translate tasks (lm-eval's ``custom_dataset`` and
``process_results``): the shipped per-language JSON-lines files (``data/<lang>.jsonl``, fields
``id`` and ``text``; the same ``id`` is the same sentence in every language), joined by ``id``,
or the files a caller redirects the task to (``data_files={language: file}``)."""

from pathlib import Path

import datasets

from tl_langneurons.tasks.pairs import (  # noqa: F401
    files_by_language,
    join,
    process_results,
    read_table,
)
from tl_langneurons.tasks.translation import corpus_bleu, corpus_chrfpp, corpus_spbleu  # noqa: F401

DATA = Path(__file__).parent / "data"


def load_translate(source: str | None = None, target: str | None = None, data_files: dict | None = None,
                   **_metadata) -> datasets.DatasetDict:
    if source is None or target is None:
        raise ValueError("a tlln_translate task names its source and target languages in dataset_kwargs")
    if data_files is None:
        src_file, tgt_file = DATA / f"{source}.jsonl", DATA / f"{target}.jsonl"
    else:
        src_file, tgt_file = files_by_language(data_files, source, target)
    return datasets.DatasetDict({"test": join(read_table(src_file), read_table(tgt_file), source, target)})
