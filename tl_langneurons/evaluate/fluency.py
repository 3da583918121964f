"""Fluency of generated text, so that steering is not rewarded for degenerate output.

A language identifier calls "Фу Фу Фу Фу …" Russian. Two measures of each generation, beside its
identified language, tell such text from language:

* ``nll`` — the mean NLL per token (nats) of the generated tokens given their prompt under the
  **unsteered** model: how plausible the text is to the model when nothing is switched on or off.
  Random-looking or mixed-script text scores high.
* ``rep`` — seq-rep-n (Welleck et al. 2019, "Neural text generation with unlikelihood training"):
  ``1 − |distinct n-grams| / |n-grams|`` over the generated token ids (n = 4 by default). A
  repeated loop scores near 1 — and it can score a *low* NLL, because once a loop has started the
  model predicts its next turn well, which is why both are needed.

A generation is **fluent** (:class:`FluencyCriterion`) when it has at least one token, its ``rep``
is at most ``max_rep``, and its ``nll`` is at most the ``quantile`` (0.95) of the same measure on
human-written text of its identified language — held-out sentences cut to as many tokens as are
generated, scored from BOS by the same unsteered model (:func:`fluency_criterion`). The "fluent
target-language rate" counts generations that are in the target language *and* fluent.
"""

import math
from dataclasses import dataclass, field

import pandas as pd

from .. import _checks
from ..errors import LangNeuronsError
from ..tokens import encode
from .scoring import sequence_logprobs

DEFAULT_REP_N = 4
# The largest seq-rep-4 a fluent generation may have. On human text it is almost always 0: of 60
# (built-in model) and 30 (Gemma 3 270M) held-out sentences per demo language cut to 24 tokens,
# none exceeded 0.2 (fluency_criterion reports this share per language as human_rep_rejected).
DEFAULT_MAX_REP = 0.2
DEFAULT_NLL_QUANTILE = 0.95


def repetition(ids: list[int], n: int = DEFAULT_REP_N) -> float:
    """seq-rep-n of a token sequence: the share of its n-grams that repeat an earlier one
    (``1 − distinct / all``); 0.0 for a sequence with fewer than ``n`` tokens."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def continuation_nll(model, prompts: list[list[int]], continuations: list[list[int]],
                     batch_size: int = 32) -> list[float]:
    """Mean NLL per token (nats) of each continuation given its prompt, under the model as it is
    (call it with no intervention on: the reference is the unsteered model); NaN where the
    continuation is empty."""
    if len(prompts) != len(continuations):
        raise LangNeuronsError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    scored = [i for i, c in enumerate(continuations) if c]
    out = [math.nan] * len(continuations)
    if scored:
        lp = sequence_logprobs(model, [(prompts[i], continuations[i]) for i in scored], [], "all",
                               batch_size, progress=False)
        for i, v in zip(scored, lp):
            out[i] = -v / len(continuations[i])
    return out


def fluency_columns(model, prompts: list[list[int]], continuations: list[list[int]], batch_size: int = 32,
                    n: int = DEFAULT_REP_N) -> dict[str, list]:
    """``n_new_tokens``, ``nll`` (under the model as it is) and ``rep`` of each generation."""
    return {"n_new_tokens": [len(c) for c in continuations],
            "nll": continuation_nll(model, prompts, continuations, batch_size),
            "rep": [repetition(c, n) for c in continuations]}


@dataclass(frozen=True)
class FluencyCriterion:
    """When a generation counts as fluent: ``rep ≤ max_rep`` and ``nll ≤ max_nll[its language]``.

    ``max_nll`` holds one threshold per language (from :func:`fluency_criterion`); a generation
    whose identified language has none (or none identified) is not counted fluent.
    """

    max_nll: dict[str, float]
    max_rep: float = DEFAULT_MAX_REP
    rep_n: int = DEFAULT_REP_N
    quantile: float = DEFAULT_NLL_QUANTILE
    n_tokens: int = 24
    human: dict[str, dict] = field(default_factory=dict)  # per language: what the thresholds came from

    def as_dict(self) -> dict:
        return {"max_nll": dict(self.max_nll), "max_rep": self.max_rep, "rep_n": self.rep_n,
                "quantile": self.quantile, "n_tokens": self.n_tokens, "human": dict(self.human)}

    def fluent(self, df: pd.DataFrame) -> pd.Series:
        """Per row of a steering frame with ``detected``, ``n_new_tokens``, ``nll`` and ``rep``: fluent?"""
        missing = {"detected", "n_new_tokens", "nll", "rep"} - set(df.columns)
        if missing:
            raise LangNeuronsError(f"the steering frame has no fluency columns {sorted(missing)}; generate with "
                                   "fluency=True")
        limit = df["detected"].map(lambda k: self.max_nll.get(k, math.nan) if isinstance(k, str) else math.nan)
        # a NaN limit or NaN nll compares False: not counted fluent
        return (df["n_new_tokens"] >= 1) & (df["rep"] <= self.max_rep) & (df["nll"] <= limit.astype(float))


def fluency_criterion(model, corpus, languages: list[str] | None = None, n_tokens: int = 24,
                      quantile: float = DEFAULT_NLL_QUANTILE, max_rep: float = DEFAULT_MAX_REP,
                      rep_n: int = DEFAULT_REP_N, max_sentences: int | None = 100,
                      batch_size: int = 16) -> FluencyCriterion:
    """Thresholds from human text: per language, the ``quantile`` of the mean NLL per token of its
    sentences cut to their first ``n_tokens`` tokens, scored from BOS by ``model`` with no
    intervention.

    Args:
        corpus: held-out human text (e.g. the built-in ``eval`` split), ``{language: sentences}``
            or a :class:`Corpus`; never the text the neurons were found on.
        n_tokens: as many tokens as the generations have (``GenerationConfig.max_new_tokens``), so
            that text of the same length is compared.
        max_sentences: the first N sentences of each language.

    The returned criterion's ``human`` records, per language, the number of sentences, the
    threshold, the median NLL, and ``human_rep_rejected``: the share of these human sentences that
    ``max_rep`` would reject (near 0 if ``max_rep`` is sound).
    """
    texts = _checks.texts_of(corpus)
    languages = _checks.languages(languages, list(texts), "the corpus")
    n_tokens = _checks.positive_int("n_tokens", n_tokens)
    quantile = _checks.rate("quantile", quantile)
    max_rep = _checks.number("max_rep", max_rep)
    rep_n = _checks.positive_int("rep_n", rep_n)
    max_sentences = _checks.positive_int("max_sentences", max_sentences, allow_none=True)
    max_nll, human = {}, {}
    for lang in languages:
        sents = texts[lang][:max_sentences] if max_sentences else texts[lang]
        # BOS + text, as generation sees it: the first token (BOS where the tokenizer has one) is the
        # context, the next n_tokens are scored
        pairs = [(ids[:1], ids[1:1 + n_tokens]) for ids in (encode(model.tokenizer, s) for s in sents)]
        pairs = [p for p in pairs if p[1]]
        if not pairs:
            raise LangNeuronsError(f"no text of language {lang!r} to set its fluency threshold from")
        conts = [c for _, c in pairs]
        nll = pd.Series(continuation_nll(model, [p for p, _ in pairs], conts, batch_size))
        reps = pd.Series([repetition(c, rep_n) for c in conts])
        max_nll[lang] = float(nll.quantile(quantile))
        human[lang] = {"n_sentences": len(conts), "max_nll": max_nll[lang], "median_nll": float(nll.median()),
                       "human_rep_rejected": float((reps > max_rep).mean())}
    return FluencyCriterion(max_nll, max_rep, rep_n, quantile, n_tokens, human)
