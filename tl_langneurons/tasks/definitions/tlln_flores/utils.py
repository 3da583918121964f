"""Data loader and scoring of the tlln_flores tasks (lm-eval's ``custom_dataset`` and
``process_results``).

From the Hub: the source and target configs of ``openlanguagedata/flores_plus`` (e.g. ``eng_Latn``
and ``deu_Latn``), each split (``dev``, ``devtest``) joined by ``id``. The dataset is gated: accept
its terms on https://huggingface.co/datasets/openlanguagedata/flores_plus and log in
(``huggingface-cli login``) once.

Offline or for tests: ``data_files={language: file}`` — one file per language in FLORES+'s own
schema (the Hub's Parquet files, or JSON lines with the same fields), holding the ``devtest``
rows; a language is named by the package's code (``de``) or its FLORES+ config (``deu_Latn``).
Each file's ``iso_639_3``/``iso_15924`` must be its language's, so that swapped files fail.
"""

import datasets

from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.tasks.pairs import (  # noqa: F401
    files_by_language,
    join,
    process_results,
    read_table,
)
from tl_langneurons.tasks.translation import corpus_bleu, corpus_chrfpp, corpus_spbleu  # noqa: F401

DATASET = "openlanguagedata/flores_plus"
SPLITS = ("dev", "devtest")
LOCAL_SPLIT = "devtest"  # what local files stand for: the tasks' test split
FIELDS = ("id", "iso_639_3", "iso_15924", "glottocode", "text", "url", "domain", "topic", "has_image",
          "has_hyperlink", "last_updated")


def _check_language(table, config: str, path: str) -> None:
    """Every row of a local file is in ``config``'s language and script (``deu`` + ``Latn``)."""
    seen = {f"{a}_{b}" for a, b in zip(table["iso_639_3"], table["iso_15924"])}
    if seen != {config}:
        raise LangNeuronsError(f"{path!r} should hold FLORES+ {config!r} rows but has "
                               f"{', '.join(sorted(seen))} (iso_639_3_iso_15924)")


def load_flores(source: str | None = None, target: str | None = None, data_files: dict | None = None,
                **_metadata) -> datasets.DatasetDict:
    """``source``/``target`` are FLORES+ config names (``eng_Latn``, ``deu_Latn``)."""
    if source is None or target is None:
        raise ValueError("a tlln_flores task names its source and target FLORES+ configs in dataset_kwargs")
    if data_files is None:
        src, tgt = datasets.load_dataset(DATASET, source), datasets.load_dataset(DATASET, target)
        return datasets.DatasetDict({s: join(src[s], tgt[s], source, target) for s in SPLITS})
    src_file, tgt_file = files_by_language(data_files, source, target)
    tables = []
    for path, config in ((src_file, source), (tgt_file, target)):
        table = read_table(path, required=FIELDS)
        _check_language(table, config, path)
        tables.append(table)
    return datasets.DatasetDict({LOCAL_SPLIT: join(*tables, source, target)})
