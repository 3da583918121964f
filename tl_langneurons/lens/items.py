"""The latent-language lens's prompts: translation, repetition and cloze items whose answers are
single tokens of the model (Wendler et al. 2024, "Do Llamas Work in English?", ACL).

The words are ``assets/words.json``: 100 English words with one hand-written translation each in
German, French, Spanish, Russian, Chinese, Japanese and Korean (MIT, written for this package; no
dataset copied). Prompts follow Wendler et al.'s design (their code: epfl-dlab/llm-latent-language),
in our own implementation:

* **translation** — four solved examples and the query, ``Français: "fleur" - Deutsch: "Blume"``
  one per line, the query ending in ``Deutsch: "``; the source language is French (German when
  the target is French), as in most of their figures;
* **repetition** — the same with source = target (``Deutsch: "Blume" - Deutsch: "Blume"``);
* **cloze** — sentences of the built-in corpus's parallel split (LibreOffice / UDHR text, MPL-2.0)
  that contain the target word (whole word; a substring in Chinese and Japanese) while their English
  side contains the English word: the word is blanked (``___``, every occurrence) and the prompt, two solved examples
  of the same language then the query, ends in ``<Answer>: "`` with "Answer" in the target language.

An item is kept only if its answer is **one token of the model in the prompt's context** (the
prompt's tokens followed by exactly one more), its English counterpart is one token too, neither
contains the other (Wendler et al. drop e.g. de "Hotel" / en "hotel"), and the two answers' token
variants are disjoint. The probability of an answer is the summed probability of its single-token
variants: the word as written, lower-cased and capitalised, each with and without a leading space
(Wendler et al. sum over all token *prefixes* of the word; with single-token answers only the
whole-word variants remain).
"""

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..tokens import encode

TASKS = ("translation", "repetition", "cloze")
N_SHOTS = {"translation": 4, "repetition": 4, "cloze": 2}
# The language's own name, as Wendler et al. label their prompts.
NAMES = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "ru": "Русский", "zh": "中文",
         "ja": "日本語", "ko": "한국어"}
ANSWER = {"en": "Answer", "de": "Antwort", "fr": "Réponse", "es": "Respuesta", "ru": "Ответ", "zh": "答案",
          "ja": "答え", "ko": "답"}
_NO_SPACES = ("zh", "ja")  # scripts without spaces between words: a cloze word matches as a substring


@dataclass(frozen=True)
class LensItem:
    """One prompt: the next token after ``prompt`` should be ``target`` (in ``language``)."""

    task: str
    language: str
    prompt: str
    target: str
    english: str
    target_ids: tuple[int, ...]  # the answer's single-token variants
    english_ids: tuple[int, ...]  # the English counterpart's


@lru_cache(maxsize=1)
def word_table() -> dict:
    """``assets/words.json``: ``{"languages": [...], "words": [{"en": ..., "de": ..., ...}], ...}``."""
    path = resources.files("tl_langneurons") / "assets" / "words.json"
    return json.loads(path.read_text(encoding="utf-8"))


def word_languages() -> list[str]:
    """The languages the shipped word set has, besides English."""
    return [k for k in word_table()["languages"] if k != "en"]


def _variant_ids(tokenizer: Any, word: str) -> tuple[int, ...]:
    """Ids of the single tokens spelling ``word`` (as written, lower, capitalised; with/without a space)."""
    out = []
    for form in dict.fromkeys((word, word.lower(), word[:1].upper() + word[1:])):
        for text in (form, " " + form):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] not in out:
                out.append(int(ids[0]))
    return tuple(out)


def _single_next(tokenizer: Any, prompt: str, word: str) -> int | None:
    """The one token that ``word`` adds after ``prompt``, or None if it adds more (or re-tokenizes the prompt)."""
    head, full = encode(tokenizer, prompt), encode(tokenizer, prompt + word)
    if len(full) != len(head) + 1 or full[:len(head)] != head:
        return None
    return int(full[-1])


def _admit(tokenizer: Any, task: str, language: str, prompt: str, target: str, english: str) -> LensItem | None:
    """The item if its answers pass Wendler et al.'s filters (module docstring), else None."""
    if target.lower() in english.lower() or english.lower() in target.lower():
        return None
    t_id, e_id = _single_next(tokenizer, prompt, target), _single_next(tokenizer, prompt, english)
    if t_id is None or e_id is None:
        return None
    t_ids = tuple(dict.fromkeys((t_id, *_variant_ids(tokenizer, target))))
    e_ids = tuple(dict.fromkeys((e_id, *_variant_ids(tokenizer, english))))
    if set(t_ids) & set(e_ids):
        return None
    return LensItem(task, language, prompt, target, english, t_ids, e_ids)


def _pair_line(src: str, tgt: str, a: str, b: str | None) -> str:
    return f'{NAMES[src]}: "{a}" - {NAMES[tgt]}: "' + ("" if b is None else f'{b}"\n')


def source_language(target: str) -> str:
    """The translation prompts' source language: French, German for French targets."""
    return "de" if target == "fr" else "fr"


def _word_items(tokenizer: Any, task: str, language: str, rng: random.Random) -> list[LensItem]:
    words = word_table()["words"]
    src = language if task == "repetition" else source_language(language)
    out = []
    for i, w in enumerate(words):
        others = [x for j, x in enumerate(words) if j != i]
        shots = rng.sample(others, N_SHOTS[task])
        prompt = "".join(_pair_line(src, language, x[src], x[language]) for x in shots)
        prompt += _pair_line(src, language, w[src], None)
        item = _admit(tokenizer, task, language, prompt, w[language], w["en"])
        if item is not None:
            out.append(item)
    return out


@lru_cache(maxsize=4096)
def _pattern(word: str, language: str) -> re.Pattern:
    if language in _NO_SPACES:
        return re.compile(re.escape(word))
    return re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", flags=re.IGNORECASE)


@lru_cache(maxsize=1)
def _parallel() -> dict[str, list[str]]:
    from ..corpus import load_corpus

    langs = word_table()["languages"]
    return load_corpus("builtin", languages=langs, split="parallel").texts


@lru_cache(maxsize=None)
def cloze_sentences(language: str) -> tuple[tuple[str, str, str], ...]:
    """``(blanked sentence, answer as written in the sentence, English word)`` from the parallel split:
    each sentence is used once, for the first word of the word set it holds."""
    par = _parallel()
    out = []
    for sent, en_sent in zip(par[language], par["en"]):
        for w in word_table()["words"]:
            pattern = _pattern(w[language], language)
            m = pattern.search(sent)
            if m is not None and _pattern(w["en"], "en").search(en_sent) is not None:
                # every occurrence is blanked: the answer must not stand in the prompt
                out.append((pattern.sub("___", sent), m.group(0), w["en"]))
                break
    return tuple(out)  # cached: never handed out mutable


def _cloze_items(tokenizer: Any, language: str, rng: random.Random) -> list[LensItem]:
    pool = cloze_sentences(language)
    out = []
    for i, (blanked, answer, english) in enumerate(pool):
        others = [x for j, x in enumerate(pool) if j != i and x[1].lower() != answer.lower()]
        if len(others) < N_SHOTS["cloze"]:
            continue
        shots = rng.sample(others, N_SHOTS["cloze"])
        prompt = "".join(f'{s}\n{ANSWER[language]}: "{a}"\n\n' for s, a, _ in shots)
        prompt += f'{blanked}\n{ANSWER[language]}: "'
        item = _admit(tokenizer, "cloze", language, prompt, answer, english)
        if item is not None:
            out.append(item)
    return out


def build_items(tokenizer: Any, languages: list[str] | None = None, tasks: list[str] | None = None,
                seed: int = 0, max_items: int | None = None) -> tuple[list[LensItem], dict]:
    """The lens items for ``languages`` × ``tasks``, and how many survived the filters.

    Args:
        tokenizer: the model's tokenizer (single-token answers are judged by it).
        languages: target languages (default: all of the word set's but English).
        tasks: ``translation``, ``repetition``, ``cloze`` (default all).
        seed: draws the few-shot examples.
        max_items: keep at most the first N surviving items per task and language.

    Returns:
        ``(items, counts)`` where ``counts[task][language] = {"candidates": n, "kept": m}``.
    """
    available = word_languages()
    if languages is not None and "en" in (languages.split(",") if isinstance(languages, str) else languages):
        raise LangNeuronsError(f"English is the lens's latent comparison, not a target; choose from {choices(available)}")
    languages = _checks.languages(languages, available, "the lens word set") if languages is not None else available
    tasks = list(TASKS) if tasks is None else [_checks.one_of("task", t, TASKS) for t in tasks]
    seed = _checks.integer("seed", seed, 0)
    max_items = _checks.positive_int("max_items", max_items, allow_none=True)
    items, counts = [], {}
    for task in tasks:
        for lang in languages:
            rng = random.Random(f"{seed}/{task}/{lang}")
            got = _cloze_items(tokenizer, lang, rng) if task == "cloze" else _word_items(tokenizer, task, lang, rng)
            n = len(cloze_sentences(lang)) if task == "cloze" else len(word_table()["words"])
            got = got[:max_items] if max_items is not None else got
            counts.setdefault(task, {})[lang] = {"candidates": n, "kept": len(got)}
            items.extend(got)
    return items, counts
