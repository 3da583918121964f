"""Data loader of the tlln_cloze tasks (lm-eval's ``custom_dataset``): the shipped JSON-lines files
of the task's language (``test`` from the corpus's eval split, ``train`` from its train split), or
the files a caller redirects it to (``data_files=``)."""

from pathlib import Path

import datasets

DATA = Path(__file__).parent / "data"


def load_cloze(language: str | None = None, data_files: dict | None = None, **_metadata) -> datasets.DatasetDict:
    if data_files is None:
        if language is None:
            raise ValueError("a tlln_cloze task names its language in dataset_kwargs")
        data_files = {"test": str(DATA / f"{language}.jsonl"), "train": str(DATA / f"{language}.train.jsonl")}
    return datasets.load_dataset("json", data_files=data_files)
