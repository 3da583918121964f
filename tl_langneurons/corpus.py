"""Text per language: the built-in corpus, a folder of ``<lang>.txt`` files, or a Hugging Face dataset.

Every source returns the same thing, a :class:`Corpus`: for each language an ordered list of
sentences (one sentence = one sequence the recorder feeds to the model), plus a ``spec`` dict that
says where the text came from, so that statistics files can record it.

The built-in corpus (see ``assets/corpus/NOTICE.md``) is split into disjoint parts:

* ``train`` (70%): the text the built-in model was trained on;
* ``stats`` (20%): for recording neuron statistics;
* ``eval`` (10%): held out, for perplexity;
* ``parallel``: 1,023 sentences exactly parallel in 17 languages, none of which occurs elsewhere.

A sentence's split is decided by a hash of its text, so the assignment does not depend on file
order, and a sentence that occurs twice can never land in two splits.
"""

import csv
import gzip
import hashlib
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from collections.abc import Iterator

from . import _checks, _smoke
from .errors import LangNeuronsError, choices
from ._io import safe_name
from .languages import flores_code, normalize_code

BUILTIN_SPLITS = ("train", "stats", "eval", "parallel")
# Hash buckets out of 1000: [0, 100) eval, [100, 300) stats, [300, 1000) train.
_SPLIT_BUCKETS = {"eval": (0, 100), "stats": (100, 300), "train": (300, 1000)}


@dataclass(frozen=True)
class Corpus:
    """Sentences per language, in a fixed order, and a description of where they came from."""

    texts: dict[str, list[str]]
    spec: dict = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.texts)

    def __getitem__(self, language: str) -> list[str]:
        if language not in self.texts:
            raise LangNeuronsError(
                f"language {language!r} is not in this corpus; available: {choices(self.texts)}"
            )
        return self.texts[language]

    def __len__(self) -> int:
        return len(self.texts)

    def items(self) -> Iterator[tuple[str, list[str]]]:
        return iter(self.texts.items())

    def n_sentences(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.texts.items()}


def _assets() -> Path:
    return Path(str(resources.files("tl_langneurons") / "assets" / "corpus"))


def builtin_languages(split: str = "stats") -> list[str]:
    """Languages available in a split of the built-in corpus."""
    if split == "parallel":
        with gzip.open(_assets() / "parallel17.tsv.gz", "rt", encoding="utf-8") as f:
            return f.readline().rstrip("\n").split("\t")
    return sorted(p.name.split(".")[0] for p in _assets().glob("*.tsv.gz") if p.name != "parallel17.tsv.gz")


def split_of(sentence: str) -> str:
    """The built-in split (``train``/``stats``/``eval``) a sentence belongs to, from a hash of its text."""
    bucket = int.from_bytes(hashlib.blake2b(sentence.encode("utf-8"), digest_size=8).digest(), "big") % 1000
    for name, (lo, hi) in _SPLIT_BUCKETS.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError(bucket)  # buckets cover [0, 1000)


def _read_builtin_language(lang: str, split: str) -> list[str]:
    with gzip.open(_assets() / f"{lang}.tsv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        col = header.index("text")
        return [r[col] for r in rows if r[col].strip() and split_of(r[col]) == split]


def _read_builtin_parallel(languages: list[str]) -> dict[str, list[str]]:
    with gzip.open(_assets() / "parallel17.tsv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    return {lang: [r[header.index(lang)] for r in rows[1:]] for lang in languages}


def _check_languages(requested: list[str] | None, available: list[str], where: str) -> list[str]:
    if requested is None:
        return list(available)
    out = []
    for lang in requested:
        if lang not in available:
            raise LangNeuronsError(
                f"unknown language {lang!r} for {where}; available: {', '.join(available)}"
            )
        out.append(lang)
    if not out:
        raise LangNeuronsError(f"no languages requested for {where}; available: {', '.join(available)}")
    return out


def _read_text_file(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LangNeuronsError(f"corpus file {str(path)!r} is not UTF-8 ({e.reason} at byte {e.start})") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise LangNeuronsError(f"corpus file {str(path)!r} is empty (no non-blank lines)")
    return lines


def _load_folder(folder: Path, languages: list[str] | None, split: str | None) -> dict[str, list[str]]:
    if not folder.is_dir():
        raise LangNeuronsError(
            f"corpus folder {str(folder)!r} does not exist; expected 'builtin', 'hf:NAME[:CONFIG][:SPLIT]' "
            "or a folder of <lang>.txt files"
        )
    if split is not None:
        sub = folder / split
        if not sub.is_dir():
            raise LangNeuronsError(f"corpus folder {str(folder)!r} has no sub-folder for split {split!r}")
        folder = sub
    available = sorted(p.stem for p in folder.glob("*.txt"))
    if not available:
        raise LangNeuronsError(f"corpus folder {str(folder)!r} holds no <lang>.txt files")
    langs = _check_languages(languages, available, f"folder {str(folder)!r}")
    return {lang: _read_text_file(folder / f"{lang}.txt") for lang in langs}


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets. Known layouts are recognised by the dataset's name (its last path part, so
# that a local copy of the same repository works too); anything else is read as a dataset with one
# config per language whose name contains "{lang}", or with a language column.

_WIKI_DEFAULT_DATE = "20231101"


def _hf_layout(name: str) -> str:
    base = name.rstrip("/").split("/")[-1].lower()
    if base in ("flores_plus", "flores200", "flores-200", "flores_200"):
        return "flores"
    if base == "wikipedia":
        return "wikipedia"
    return "generic"


def _paragraph_sentences(text: str) -> list[str]:
    """Wikipedia articles → lines that look like prose (drop headings, lists and very short lines)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= 20 and not line.startswith(("=", "*", "|", "{")):
            out.append(line)
    return out


def _load_hf(source: str, languages: list[str] | None, max_sentences: int | None, text_column: str) -> dict[str, list[str]]:
    import datasets  # heavy import, only when needed

    parts = source[len("hf:"):].split(":")
    name, rest = parts[0], parts[1:]
    if not name:
        raise LangNeuronsError(f"corpus {source!r} names no dataset; expected 'hf:NAME[:CONFIG][:SPLIT]'")
    if languages is None:
        raise LangNeuronsError(f"corpus {source!r}: a Hugging Face dataset needs an explicit list of languages")
    layout = _hf_layout(name)
    out: dict[str, list[str]] = {}
    for lang in languages:
        if layout == "flores":
            # FLORES+: one config per language ("deu_Latn"), splits dev/devtest, column "text".
            split = rest[-1] if rest else "dev"
            config = flores_code(lang)
            ds = datasets.load_dataset(name, config, split=split)
            texts = [t for t in ds["text"]]
        elif layout == "wikipedia":
            # wikimedia/wikipedia: configs "<date>.<lang>", one split "train"; articles → paragraphs.
            date = rest[0] if rest else _WIKI_DEFAULT_DATE
            split = rest[1] if len(rest) > 1 else "train"
            ds = datasets.load_dataset(name, f"{date}.{normalize_code(lang)}", split=split, streaming=True)
            texts = []
            for row in ds:
                texts.extend(_paragraph_sentences(row["text"]))
                if max_sentences is not None and len(texts) >= max_sentences:
                    break
        else:
            config = rest[0] if rest else None
            split = rest[1] if len(rest) > 1 else "train"
            if config is not None and "{lang}" in config:
                ds = datasets.load_dataset(name, config.replace("{lang}", lang), split=split)
            else:
                ds = datasets.load_dataset(name, config, split=split)
                lang_col = next((c for c in ("language", "lang", "language_code") if c in ds.column_names), None)
                if lang_col is None:
                    raise LangNeuronsError(
                        f"corpus {source!r}: cannot tell the language of rows; use a config with "
                        "'{lang}' in it (hf:NAME:{lang}:SPLIT) or a dataset with a 'language' column"
                    )
                ds = ds.filter(lambda r: normalize_code(str(r[lang_col])) == lang)
            if text_column not in ds.column_names:
                raise LangNeuronsError(
                    f"corpus {source!r} has no column {text_column!r}; columns: {choices(ds.column_names)}"
                )
            texts = list(ds[text_column])
        texts = [t.strip() for t in texts if t and t.strip()]
        if not texts:
            raise LangNeuronsError(f"corpus {source!r} has no text for language {lang!r}")
        out[lang] = texts
    return out


def load_corpus(
    source: str = "builtin",
    languages: list[str] | None = None,
    split: str | None = None,
    max_sentences: int | None = None,
    seed: int | None = None,
    text_column: str = "text",
) -> Corpus:
    """Load sentences per language.

    Args:
        source: ``"builtin"``; a folder of ``<lang>.txt`` files (one sentence per line, UTF-8);
            or ``"hf:NAME[:CONFIG][:SPLIT]"`` for a Hugging Face dataset. FLORES+
            (``hf:openlanguagedata/flores_plus[:SPLIT]``, per-language configs like ``deu_Latn``)
            and Wikipedia (``hf:wikimedia/wikipedia[:DATE][:SPLIT]``) are understood by name;
            other datasets need ``{lang}`` in CONFIG or a ``language`` column.
        languages: language codes; ``None`` = every language the source has (not for ``hf:``).
        split: built-in: ``train``, ``stats`` (default), ``eval`` or ``parallel``. Folder: an
            optional sub-folder. For ``hf:`` the split is part of ``source``.
        max_sentences: keep the first N sentences of each language (after shuffling, if ``seed``).
        seed: if given, shuffle each language's sentences with this seed first.
    """
    max_sentences = _smoke.cap(_checks.positive_int("max_sentences", max_sentences, allow_none=True), _smoke.SENTENCES)
    if languages is not None:
        if isinstance(languages, str):
            languages = [x for x in languages.split(",") if x]
        languages = list(languages)
    spec: dict = {"source": source, "split": split, "max_sentences": max_sentences, "seed": seed}

    if source == "builtin":
        split = "stats" if split is None else split
        spec["split"] = split
        if split not in BUILTIN_SPLITS:
            raise LangNeuronsError(f"unknown split {split!r} of the built-in corpus; allowed: {choices(BUILTIN_SPLITS)}")
        langs = _check_languages(languages, builtin_languages(split), f"the built-in corpus (split {split!r})")
        if split == "parallel":
            texts = _read_builtin_parallel(langs)
        else:
            texts = {lang: _read_builtin_language(lang, split) for lang in langs}
    elif source.startswith("hf:"):
        if split is not None:
            raise LangNeuronsError(f"split {split!r}: for a Hugging Face dataset give the split in the source, hf:NAME[:CONFIG][:SPLIT]")
        texts = _load_hf(source, languages, max_sentences if seed is None else None, text_column)
    else:
        texts = _load_folder(Path(source), languages, split)

    if seed is not None:
        rng = random.Random(seed)
        texts = {k: rng.sample(v, len(v)) for k, v in texts.items()}
    if max_sentences is not None:
        texts = {k: v[:max_sentences] for k, v in texts.items()}
    for k in texts:  # a language names result folders and files: never a path
        safe_name("language", k)
    return Corpus(texts=texts, spec=spec)
