"""Translation documents for the package's lm-eval tasks: two monolingual tables joined by ``id``.

Both translation families (``tlln_translate`` on the built-in corpus, ``tlln_flores`` on FLORES+)
store one table per language, aligned by a sentence ``id``, as FLORES+ itself does; a task joins
its source and target tables into documents with ``source``/``target`` text and the languages'
codes and English names (the prompt names them). The families' ``utils.py`` files are thin
wrappers over this module, so both share the join, the checks and ``process_results``.
"""

from pathlib import Path

from ..errors import LangNeuronsError, choices
from ..languages import language, normalize_code
from . import translation

_READERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_table(path: str | Path, required: tuple[str, ...] = ("id", "text")):
    """One language's rows (a ``datasets.Dataset``) from a JSON-lines or Parquet file."""
    import datasets

    p = Path(path)
    if not p.is_file():
        raise LangNeuronsError(f"the translation data file {str(path)!r} does not exist")
    if p.suffix not in _READERS:
        raise LangNeuronsError(f"cannot read {str(path)!r}: allowed file types {choices(sorted(_READERS))}")
    table = datasets.load_dataset(_READERS[p.suffix], data_files={"rows": str(p)}, split="rows")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise LangNeuronsError(f"{str(path)!r} has no {missing[0]!r} column; it needs {choices(required)} "
                               f"and has {choices(table.column_names)}")
    return table


def files_by_language(data_files: dict, source: str, target: str) -> tuple[str, str]:
    """The source and target files of ``data_files`` (``{language: file}``; a language is named by
    the package's code, ``de``, or a FLORES code, ``deu_Latn``)."""
    if not isinstance(data_files, dict):
        raise LangNeuronsError(f"data_files must map a language to its file, e.g. {{'en': 'en.jsonl'}}; "
                               f"got {data_files!r}")
    by_code = {normalize_code(str(k)): v for k, v in data_files.items()}
    want = {normalize_code(source): source, normalize_code(target): target}
    missing = [lang for code, lang in want.items() if code not in by_code]
    extra = [k for k, code in zip(data_files, by_code) if code not in want]
    if missing or extra:
        raise LangNeuronsError(f"data_files of a {source}→{target} task name the files of exactly "
                               f"{choices(want.values())}; " + (f"missing {missing[0]!r}" if missing
                                                                else f"unexpected {extra[0]!r}"))
    return str(by_code[normalize_code(source)]), str(by_code[normalize_code(target)])


def join(source_rows, target_rows, source: str, target: str):
    """Documents (a ``datasets.Dataset``) pairing each ``id`` of ``source_rows`` with the target
    row of the same ``id``, in the source table's order; every source id must have a target."""
    import datasets

    targets = {}
    for row in target_rows:
        if row["id"] in targets:
            raise LangNeuronsError(f"the {target} table has id {row['id']!r} twice")
        targets[row["id"]] = row["text"]
    src, tgt = language(source), language(target)
    docs = []
    for row in source_rows:
        if row["id"] not in targets:
            raise LangNeuronsError(f"id {row['id']!r} of the {source} table has no row in the {target} table; "
                                   "the two tables must hold the same sentences")
        docs.append({"id": row["id"], "source": row["text"], "target": targets[row["id"]],
                     "source_language": src.code, "target_language": tgt.code,
                     "source_name": src.name, "target_name": tgt.name})
    if not docs:
        raise LangNeuronsError(f"the {source} table has no rows")
    return datasets.Dataset.from_list(docs)


def process_results(doc: dict, results: list) -> dict:
    """lm-eval's ``process_results``: the reference and the generated translation for every
    metric. The prompt ends with ``"<Language>:"``, so a continuation starts with a space (and
    lm-eval has already cut it at the stop string); both are stripped, as sacreBLEU expects
    segments without surrounding whitespace."""
    return translation.pairs(doc["target"].strip(), results[0].strip())
