"""Corpus-level translation metrics on sacreBLEU, usable as lm-eval aggregations.

Three metrics, each computed once over the whole test set (the way sacreBLEU and the FLORES
papers define them), never as a mean of per-sentence or per-batch scores — BLEU is not additive:
its n-gram precisions and brevity penalty are ratios of corpus-wide counts, so a mean of per-batch
BLEUs is a different (and batch-size dependent) number:

* ``bleu`` — BLEU with sacreBLEU's default ``13a`` tokenizer;
* ``spbleu`` — BLEU on the FLORES-200 SentencePiece tokenization (``tokenize="flores200"``), the
  FLORES/NLLB metric that treats every script alike. sacreBLEU downloads that SentencePiece model
  once, on first use, into its cache (``$SACREBLEU``, default ``~/.sacrebleu``); where it cannot,
  spBLEU is NaN and one warning says so (no stand-in value);
* ``chrf++`` — chrF++ (``CHRF(word_order=2)``: character 6-grams plus word 1–2-grams, β = 2).
  lm-eval's own ``chrf`` metric is chrF2 without word n-grams; the name says which one this is.

In an lm-eval task, ``process_results`` returns ``(reference, hypothesis)`` per document for each
metric (:func:`pairs`) and the YAML names :func:`corpus_bleu`, :func:`corpus_spbleu` and
:func:`corpus_chrfpp` as the aggregations. :func:`signatures` gives sacreBLEU's signature string of
each metric (what to report next to a score); :func:`task_signatures` finds them for a task's
resolved lm-eval config, which is how :class:`~.runner.TaskRun` records them.
"""

import inspect
import math
import os
import warnings
from collections.abc import Sequence
from functools import cache

from ..errors import LangNeuronsError, choices

METRICS = ("bleu", "spbleu", "chrf++")
SPM_URL_KEY = "flores200"


class SpBleuUnavailableWarning(UserWarning):
    """spBLEU could not be computed: sacreBLEU's FLORES-200 SentencePiece model is not cached and
    could not be downloaded."""


def _spm_model_path() -> str:
    """Where sacreBLEU keeps (or would download) the FLORES-200 SentencePiece model."""
    from sacrebleu.tokenizers import tokenizer_spm

    url = tokenizer_spm.SPM_MODELS[SPM_URL_KEY]["url"]
    return os.path.join(tokenizer_spm.SACREBLEU_DIR, "models", os.path.basename(url))


@cache
def _spbleu_available(model_path: str) -> bool:
    """sacreBLEU's spBLEU metric, or ``None`` (after one warning) when its SentencePiece model is
    neither cached at ``model_path`` nor downloadable. Cached per model path, so the download is
    tried and the warning given once per process, not once per task and condition."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers import tokenizer_spm

    try:
        BLEU(tokenize=SPM_URL_KEY)
        return True
    # sacreBLEU's downloader raises URLError/OSError offline and calls sys.exit on an SSL error
    except (OSError, SystemExit) as err:
        url = tokenizer_spm.SPM_MODELS[SPM_URL_KEY]["url"]
        warnings.warn(
            f"spBLEU is NaN: it needs sacreBLEU's FLORES-200 SentencePiece model, a one-time download from {url} "
            f"to {model_path} (the folder is $SACREBLEU, default ~/.sacrebleu), which failed ({err!r}). "
            "Run once with network access: python -c \"import sacrebleu; sacrebleu.BLEU(tokenize='flores200')\"",
            SpBleuUnavailableWarning, stacklevel=2)
        return False


def _build(name: str):
    """A new sacreBLEU metric object for ``name``, or ``None`` for an unavailable spBLEU."""
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU()  # tokenize="13a", sacreBLEU's default
    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "spbleu":
        return BLEU(tokenize=SPM_URL_KEY) if _spbleu_available(_spm_model_path()) else None
    raise LangNeuronsError(f"unknown translation metric {name!r}; allowed: {choices(METRICS)}")


def _split(items: Sequence) -> tuple[list[str], list[str]]:
    refs, hyps = [], []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise LangNeuronsError(f"a translation metric's items are (reference, hypothesis) pairs, got {item!r}")
        ref, hyp = item
        refs.append(str(ref))
        hyps.append(str(hyp))
    if not refs:
        raise LangNeuronsError("a corpus-level translation metric needs at least one (reference, hypothesis) pair")
    return refs, hyps


def corpus_score(name: str, references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level ``name`` (``bleu``, ``spbleu``, ``chrf++``) of ``hypotheses`` against one
    reference each; NaN for spBLEU when its tokenizer model is unavailable (see the module)."""
    if len(references) != len(hypotheses):
        raise LangNeuronsError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    metric = _build(name)
    if metric is None:
        return math.nan
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def corpus_bleu(items: Sequence) -> float:
    """lm-eval aggregation: corpus BLEU (13a) of the ``(reference, hypothesis)`` items."""
    return corpus_score("bleu", *_split(items))


def corpus_spbleu(items: Sequence) -> float:
    """lm-eval aggregation: corpus spBLEU (FLORES-200 SentencePiece); NaN where unavailable."""
    return corpus_score("spbleu", *_split(items))


def corpus_chrfpp(items: Sequence) -> float:
    """lm-eval aggregation: corpus chrF++ (``word_order=2``) of the ``(reference, hypothesis)`` items."""
    return corpus_score("chrf++", *_split(items))


AGGREGATIONS = {"bleu": corpus_bleu, "spbleu": corpus_spbleu, "chrf++": corpus_chrfpp}


def pairs(reference: str, hypothesis: str) -> dict[str, tuple[str, str]]:
    """What ``process_results`` returns for one document: the same pair for every metric."""
    return {name: (reference, hypothesis) for name in METRICS}


def _signature(name: str) -> str | None:
    probe = _build(name)
    if probe is None:
        return None
    # a sacreBLEU signature names the number of references, which it only knows after scoring;
    # the tasks have one reference per segment, so score a one-segment corpus with one
    probe.corpus_score(["signature probe"], [["signature probe"]])
    return str(probe.get_signature())


def signatures(metrics: Sequence[str] = METRICS) -> dict[str, str | None]:
    """sacreBLEU's signature of each metric as the tasks compute it (one reference per segment),
    e.g. ``nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0`` for chrF++; ``None``
    for spBLEU when its tokenizer model is unavailable."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise LangNeuronsError(f"unknown translation metric {unknown[0]!r}; allowed: {choices(METRICS)}")
    return {m: _signature(m) for m in metrics}


@cache
def _sources() -> dict[str, str]:
    return {inspect.getsource(fn): name for name, fn in AGGREGATIONS.items()}


def task_signatures(config: dict) -> dict[str, str | None]:
    """The signatures of the metrics of a resolved lm-eval task config (``TaskRun.configs[task]``)
    that this module aggregates; ``{}`` for any other task. lm-eval dumps a callable aggregation as
    its source text, so that is what identifies this module's functions (a metric merely *named*
    ``bleu`` elsewhere is not taken for one of these)."""
    found = []
    for entry in config.get("metric_list") or []:
        agg = entry.get("aggregation") if isinstance(entry, dict) else None
        if callable(agg):
            name = next((n for n, fn in AGGREGATIONS.items() if fn is agg), None)
        else:
            name = _sources().get(agg) if isinstance(agg, str) else None
        if name is not None:
            found.append(name)
    return signatures(found) if found else {}
