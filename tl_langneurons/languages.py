"""Metadata about languages: names, FLORES-200 codes, script, family and branch.

Covers the 27 languages of the built-in corpus and the languages used in the papers this package
reproduces (Tang 2024, Kojima 2024, Gurgurov 2025, Rahmanisa 2025, Mondal 2025). Codes are ISO 639-1
where one exists (as in the built-in corpus), otherwise ISO 639-3. FLORES-style codes such as
``deu_Latn`` are mapped back to these with :func:`normalize_code`.
"""

from dataclasses import dataclass

from .errors import LangNeuronsError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1 (or 639-3 where there is no 639-1 code)
    name: str
    flores: str  # FLORES-200 / FLORES+ code, e.g. "deu_Latn"
    script: str
    family: str
    branch: str


# code, name, flores, script, family, branch
_TABLE = [
    ("af", "Afrikaans", "afr_Latn", "Latin", "Indo-European", "Germanic"),
    ("am", "Amharic", "amh_Ethi", "Ethiopic", "Afro-Asiatic", "Semitic"),
    ("ar", "Arabic", "arb_Arab", "Arabic", "Afro-Asiatic", "Semitic"),
    ("bg", "Bulgarian", "bul_Cyrl", "Cyrillic", "Indo-European", "Slavic"),
    ("bn", "Bengali", "ben_Beng", "Bengali", "Indo-European", "Indo-Aryan"),
    ("bo", "Tibetan", "bod_Tibt", "Tibetan", "Sino-Tibetan", "Tibeto-Burman"),
    ("ca", "Catalan", "cat_Latn", "Latin", "Indo-European", "Romance"),
    ("cs", "Czech", "ces_Latn", "Latin", "Indo-European", "Slavic"),
    ("cy", "Welsh", "cym_Latn", "Latin", "Indo-European", "Celtic"),
    ("da", "Danish", "dan_Latn", "Latin", "Indo-European", "Germanic"),
    ("de", "German", "deu_Latn", "Latin", "Indo-European", "Germanic"),
    ("el", "Greek", "ell_Grek", "Greek", "Indo-European", "Hellenic"),
    ("en", "English", "eng_Latn", "Latin", "Indo-European", "Germanic"),
    ("es", "Spanish", "spa_Latn", "Latin", "Indo-European", "Romance"),
    ("et", "Estonian", "est_Latn", "Latin", "Uralic", "Finnic"),
    ("eu", "Basque", "eus_Latn", "Latin", "Basque", "Basque"),
    ("fa", "Persian", "pes_Arab", "Arabic", "Indo-European", "Iranian"),
    ("fi", "Finnish", "fin_Latn", "Latin", "Uralic", "Finnic"),
    ("fr", "French", "fra_Latn", "Latin", "Indo-European", "Romance"),
    ("he", "Hebrew", "heb_Hebr", "Hebrew", "Afro-Asiatic", "Semitic"),
    ("hi", "Hindi", "hin_Deva", "Devanagari", "Indo-European", "Indo-Aryan"),
    ("hr", "Croatian", "hrv_Latn", "Latin", "Indo-European", "Slavic"),
    ("ht", "Haitian Creole", "hat_Latn", "Latin", "Creole", "French Creole"),
    ("hu", "Hungarian", "hun_Latn", "Latin", "Uralic", "Ugric"),
    ("id", "Indonesian", "ind_Latn", "Latin", "Austronesian", "Malayic"),
    ("is", "Icelandic", "isl_Latn", "Latin", "Indo-European", "Germanic"),
    ("it", "Italian", "ita_Latn", "Latin", "Indo-European", "Romance"),
    ("ja", "Japanese", "jpn_Jpan", "Japanese", "Japonic", "Japanese"),
    ("jv", "Javanese", "jav_Latn", "Latin", "Austronesian", "Javanese"),
    ("ka", "Georgian", "kat_Geor", "Georgian", "Kartvelian", "Karto-Zan"),
    ("ko", "Korean", "kor_Hang", "Hangul", "Koreanic", "Korean"),
    ("lt", "Lithuanian", "lit_Latn", "Latin", "Indo-European", "Baltic"),
    ("lv", "Latvian", "lvs_Latn", "Latin", "Indo-European", "Baltic"),
    ("mr", "Marathi", "mar_Deva", "Devanagari", "Indo-European", "Indo-Aryan"),
    ("mt", "Maltese", "mlt_Latn", "Latin", "Afro-Asiatic", "Semitic"),
    ("ne", "Nepali", "npi_Deva", "Devanagari", "Indo-European", "Indo-Aryan"),
    ("nl", "Dutch", "nld_Latn", "Latin", "Indo-European", "Germanic"),
    ("no", "Norwegian", "nob_Latn", "Latin", "Indo-European", "Germanic"),
    ("pl", "Polish", "pol_Latn", "Latin", "Indo-European", "Slavic"),
    ("pt", "Portuguese", "por_Latn", "Latin", "Indo-European", "Romance"),
    ("qu", "Quechua", "quy_Latn", "Latin", "Quechuan", "Quechua"),
    ("ro", "Romanian", "ron_Latn", "Latin", "Indo-European", "Romance"),
    ("ru", "Russian", "rus_Cyrl", "Cyrillic", "Indo-European", "Slavic"),
    ("sk", "Slovak", "slk_Latn", "Latin", "Indo-European", "Slavic"),
    ("sl", "Slovenian", "slv_Latn", "Latin", "Indo-European", "Slavic"),
    ("sr", "Serbian", "srp_Cyrl", "Cyrillic", "Indo-European", "Slavic"),
    ("sv", "Swedish", "swe_Latn", "Latin", "Indo-European", "Germanic"),
    ("sw", "Swahili", "swh_Latn", "Latin", "Niger-Congo", "Bantu"),
    ("ta", "Tamil", "tam_Taml", "Tamil", "Dravidian", "South Dravidian"),
    ("te", "Telugu", "tel_Telu", "Telugu", "Dravidian", "South-Central Dravidian"),
    ("th", "Thai", "tha_Thai", "Thai", "Kra-Dai", "Tai"),
    ("tr", "Turkish", "tur_Latn", "Latin", "Turkic", "Oghuz"),
    ("uk", "Ukrainian", "ukr_Cyrl", "Cyrillic", "Indo-European", "Slavic"),
    ("ur", "Urdu", "urd_Arab", "Arabic", "Indo-European", "Indo-Aryan"),
    ("vi", "Vietnamese", "vie_Latn", "Latin", "Austroasiatic", "Vietic"),
    ("zh", "Chinese", "zho_Hans", "Han", "Sino-Tibetan", "Sinitic"),
]

LANGUAGES: dict[str, Language] = {row[0]: Language(*row) for row in _TABLE}
_BY_FLORES = {lang.flores.lower(): lang.code for lang in LANGUAGES.values()}
_BY_ISO3 = {lang.flores.split("_")[0]: lang.code for lang in LANGUAGES.values()}
_BY_ISO3.update({"zho": "zh", "fas": "fa", "cmn": "zh", "est": "et", "lav": "lv", "nor": "no", "swa": "sw"})


def normalize_code(code: str) -> str:
    """Map ``deu_Latn``, ``deu`` or ``de`` to the package's code (``de``); unknown codes pass through."""
    low = code.strip()
    if low in LANGUAGES:
        return low
    if low.lower() in _BY_FLORES:
        return _BY_FLORES[low.lower()]
    if low.lower().split("_")[0] in _BY_ISO3:
        return _BY_ISO3[low.lower().split("_")[0]]
    return low


def language(code: str) -> Language:
    """Metadata for ``code`` (any form :func:`normalize_code` understands)."""
    norm = normalize_code(code)
    if norm not in LANGUAGES:
        raise LangNeuronsError(
            f"no metadata for language {code!r}; known: {', '.join(sorted(LANGUAGES))}"
        )
    return LANGUAGES[norm]


def flores_code(code: str) -> str:
    """The FLORES+ config name (e.g. ``deu_Latn``) for a language code."""
    return language(code).flores
