"""Which language a task measures, read off its lm-eval name.

lm-eval names its multilingual tasks ``<benchmark>_<language>`` with each benchmark's own code:
ISO 639-1 (``xcopa_it``, ``xnli_de``), a FLORES code (``belebele_deu_Latn``), an English name
(``include_base_44_albanian``), or a dataset's own (XWinograd's ``jp``). The package's translation
tasks (``tlln_translate_en_de``, ``tlln_flores_en_de``) measure their target language.
"""

import re

from ..languages import LANGUAGES, normalize_code

_BY_NAME = {lang.name.lower().replace(" ", "_"): lang.code for lang in LANGUAGES.values()}
_BY_NAME.update({"chinese": "zh", "persian": "fa", "malay": "ms", "north_macedonian": "mk", "serbian": "sr"})
_DATASET_CODES = {"jp": "ja"}  # XWinograd's subset name for Japanese

_PATTERNS = [
    (re.compile(r"^tlln_(?:translate|flores)_([a-z]{2,3})_([a-z]{2,3})$"), lambda m: m.group(2)),
    (re.compile(r"^tlln_cloze_([a-z]{2,3})$"), lambda m: m.group(1)),
    (re.compile(r"^belebele_([a-z]{3}_[A-Za-z]{4})$"), lambda m: normalize_code(m.group(1))),
    (re.compile(r"^include_base_44_([a-z_]+?)(?:_(?:arts_humanities|stem|business_commerce|social_science|"
                r"health_oriented_education|applied_science|driving_license|general_knowledge|marine_license|"
                r"medical_license|professional_certification))?$"),
     lambda m: _BY_NAME.get(m.group(1))),
    (re.compile(r"^(?:xcopa|xnli|xwinograd|xstorycloze|xquad|pawsx|xnli_eu|mgsm_direct)_([a-z]{2,3})$"),
     lambda m: _DATASET_CODES.get(m.group(1), m.group(1))),
]


def task_language(task: str) -> str | None:
    """The package's code of the language ``task`` measures, or ``None`` when the name does not say."""
    for pattern, pick in _PATTERNS:
        m = pattern.match(task)
        if m:
            return pick(m)
    return None


def source_language(task: str) -> str | None:
    """The source language of a translation task (``tlln_translate_en_de`` → ``en``), else ``None``."""
    m = _PATTERNS[0][0].match(task)
    return m.group(1) if m else None
