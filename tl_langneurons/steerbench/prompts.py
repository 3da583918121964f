"""The benchmark's prompts: sentence openings with a meaning to keep, in several source languages,
split once into a tuning set (strengths are chosen there) and an evaluation set (numbers are
reported there), never overlapping.

Source: the built-in ``parallel`` split (human translations of LibreOffice's interface and help
and of the UDHR, 17 languages; see the corpus NOTICE). A prompt is the first half of a sentence's
words (characters, for scripts written without spaces), at least ``min_words``; the sentence's
translation into each target is kept as the prompt's reference (what a faithful continuation in
the target would say). Each sentence index is used once across both splits, so the tuning and the
evaluation prompts share no sentence in any language.

With ``kind="questions"`` a prompt is instead a whole question of the split (its English side ends
with "?": 67 confirmation dialogs such as "Do you want to delete the entry?"), to be answered; the
same rules of splitting hold.

Prompting instructions: "Continue in <language>:" in English, in each target language's own words
(:data:`INSTRUCTIONS`), and in the prompt's language (:data:`SOURCE_TEMPLATES`, naming the target
by its name in the prompt's language from the Unicode CLDR, read through ``babel``). The phrasings
were written by the package's authors for the 17 parallel languages and were not checked by native
speakers; the templates that need a grammatical case the CLDR name lacks (Polish, Russian,
Ukrainian) say "(language: X)" instead.
"""

import numpy as np
import pandas as pd

from .. import _checks
from ..corpus import load_corpus
from ..errors import LangNeuronsError

# scripts written without spaces: a "word" is this many characters (as the steering prompts cut them)
NO_SPACE = {"zh": 2, "ja": 2, "th": 4}

# language -> (its English name, "Continue in <language>:" in that language)
INSTRUCTIONS = {
    "en": ("English", "Continue in English:"),
    "de": ("German", "Weiter auf Deutsch:"),
    "fr": ("French", "Continuez en français :"),
    "es": ("Spanish", "Continúa en español:"),
    "pl": ("Polish", "Kontynuuj po polsku:"),
    "tr": ("Turkish", "Türkçe devam et:"),
    "vi": ("Vietnamese", "Tiếp tục bằng tiếng Việt:"),
    "id": ("Indonesian", "Lanjutkan dalam bahasa Indonesia:"),
    "ru": ("Russian", "Продолжи на русском языке:"),
    "uk": ("Ukrainian", "Продовжуй українською мовою:"),
    "el": ("Greek", "Συνέχισε στα ελληνικά:"),
    "zh": ("Chinese", "请用中文继续："),
    "ja": ("Japanese", "日本語で続けてください："),
    "ko": ("Korean", "한국어로 계속하세요:"),
    "ar": ("Arabic", "تابع باللغة العربية:"),
    "he": ("Hebrew", "המשך בעברית:"),
    "th": ("Thai", "เขียนต่อเป็นภาษาไทย:"),
}

# source language -> "Continue in {name}:" in that language, {name} = the target's name there (CLDR,
# nominative). Where the template and the target coincide it gives INSTRUCTIONS' own phrasing
# (tests check this) except in pl/ru/uk, whose natural phrasing needs a case CLDR does not give.
SOURCE_TEMPLATES = {
    "en": "Continue in {name}:",
    "de": "Weiter auf {name}:",
    "fr": "Continuez en {name} :",
    "es": "Continúa en {name}:",
    "pl": "Kontynuuj (język: {name}):",
    "tr": "{name} devam et:",
    "vi": "Tiếp tục bằng {name}:",
    "id": "Lanjutkan dalam bahasa {name}:",
    "ru": "Продолжи (язык: {name}):",
    "uk": "Продовжуй (мова: {name}):",
    "el": "Συνέχισε στα {name}:",
    "zh": "请用{name}继续：",
    "ja": "{name}で続けてください：",
    "ko": "{name}로 계속하세요:",  # every CLDR Korean language name ends in 어, a vowel: 로, not 으로
    "ar": "تابع باللغة {name}:",
    "he": "המשך ב{name}:",
    "th": "เขียนต่อเป็นภาษา{name}:",
}
# CLDR capitalises these names as if alone ("Tiếng Đức", "Γερμανικά"); inside a sentence they are lower case
_LOWER_FIRST = {"vi", "el"}
PHRASINGS = ("english", "target", "source")


def language_name(language: str, in_language: str) -> str:
    """``language``'s name in ``in_language`` (Unicode CLDR via ``babel``), as it stands in a sentence."""
    try:
        from babel import Locale
    except ImportError as e:  # pragma: no cover - babel comes with the steerbench and test extras
        raise LangNeuronsError("the prompt-source instruction needs babel (the language names of the Unicode "
                               "CLDR): pip install 'tl_langneurons[steerbench]'") from e
    name = Locale.parse(in_language).languages[language]
    return name[:1].lower() + name[1:] if in_language in _LOWER_FIRST else name


def instruction(target: str, phrasing: str, source: str | None = None) -> str:
    """The instruction to continue in ``target``: ``phrasing`` is ``"english"``, ``"target"`` (in the
    target's own words) or ``"source"`` (in ``source``, the prompt's language)."""
    phrasing = _checks.one_of("phrasing", phrasing, PHRASINGS)
    if target not in INSTRUCTIONS:
        raise LangNeuronsError(f"no prompting instruction for language {target!r}; available: {sorted(INSTRUCTIONS)}")
    name, native = INSTRUCTIONS[target]
    if phrasing == "english":
        return f"Continue in {name}:"
    if phrasing == "target":
        return native
    if source not in SOURCE_TEMPLATES:
        raise LangNeuronsError(f"no prompting instruction in the prompt's language {source!r}; "
                               f"available: {sorted(SOURCE_TEMPLATES)}")
    return SOURCE_TEMPLATES[source].format(name=language_name(target, source))


def opening(text: str, language: str, min_words: int) -> str | None:
    """The first half of ``text``'s words (at least ``min_words``), or None if the sentence is too
    short to leave a second half of at least as many words."""
    per = NO_SPACE.get(language)
    if per is not None:
        n = max(min_words * per, len(text) // 2)
        return text[:n].rstrip() if len(text) >= n + min_words * per else None
    words = text.split()
    n = max(min_words, len(words) // 2)
    return " ".join(words[:n]) if len(words) >= n + min_words else None


PROMPT_KINDS = ("openings", "questions")


def is_question(english: str) -> bool:
    """A sentence of the parallel split is a question when its English side ends with "?" (67 of
    1,023: LibreOffice's confirmation dialogs, "Do you want to overwrite the existing file?")."""
    return english.rstrip().endswith("?")


def bench_prompts(targets: list[str], sources: list[str] | None = None, n_tune: int = 8, n_eval: int = 32,
                  min_words: int = 3, seed: int = 0, kind: str = "openings") -> pd.DataFrame:
    """Per target: ``n_tune`` tuning and ``n_eval`` evaluation prompts, in the source languages
    other than the target in turn (prompt *i* in ``sources[i % len]``).

    ``kind``: ``"openings"`` (the first half of a sentence, to be continued) or ``"questions"``
    (a whole question of the split, to be answered; 67 exist, so ``n_tune + n_eval`` ≤ 67).

    Returns one row per prompt: ``split`` (``tune``/``eval``), ``target``, ``prompt_id`` (per
    target and split), ``source``, ``prompt``, ``reference`` (the sentence's translation in the
    target) and ``sentence`` (its index in the parallel split). Deterministic in ``seed``.
    """
    n_tune, n_eval = _checks.positive_int("n_tune", n_tune), _checks.positive_int("n_eval", n_eval)
    min_words = _checks.positive_int("min_words", min_words)
    par = load_corpus("builtin", split="parallel")
    targets = _checks.languages(targets, par.languages, "the built-in parallel split")
    sources = _checks.languages(sources, par.languages, "the built-in parallel split")
    kind = _checks.one_of("kind", kind, PROMPT_KINDS)
    order = np.random.default_rng(int(seed)).permutation(len(par[par.languages[0]])).tolist()
    if kind == "questions":
        order = [j for j in order if is_question(par["en"][j])]
        if n_tune + n_eval > len(order):
            raise LangNeuronsError(f"the parallel split has {len(order)} questions: n_tune + n_eval must be at most "
                                   f"that, got {n_tune} + {n_eval}")
    rows = []
    for target in targets:
        srcs = [s for s in sources if s != target]
        if not srcs:
            raise LangNeuronsError(f"target {target!r} has no source language besides itself; give more --languages")
        it = iter(order)  # the same sentence order for every target: tune sentences never reach eval
        for split, n in (("tune", n_tune), ("eval", n_eval)):
            for i in range(n):
                src = srcs[i % len(srcs)]
                for j in it:
                    p = par[src][j] if kind == "questions" else opening(par[src][j], src, min_words)
                    if p:
                        rows.append({"split": split, "target": target, "prompt_id": i, "source": src, "prompt": p,
                                     "reference": par[target][j], "sentence": j})
                        break
                else:
                    raise LangNeuronsError(f"the parallel split has too few long sentences for {n_tune} + {n_eval} "
                                           f"prompts per target")
    return pd.DataFrame(rows)
