"""Measurements under interventions, each a tidy DataFrame (one row per measurement). METHODS §6.

* :func:`nll_per_language` — mean NLL per token of each language's text, optionally under an
  intervention;
* :func:`perplexity_matrix` + :func:`perplexity_summary` — Tang et al.'s deactivation matrix: switch
  off language *i*'s neurons, measure every language *j* on exactly the same tokens, with a
  random-neuron control of the same layer profile;
* :func:`steer`, :func:`steer_sweep` + :func:`steer_summary` — generate under an intervention on the
  target's neurons, identify the continuation's language offline (:mod:`.langid`), and report the
  target-language rate against no intervention and the random control, with Wilson intervals;
  :func:`steer_with` does the same under interventions the caller builds (e.g. Gurgurov et al.'s
  language arithmetic: the source language off and the target's mean added);
* :func:`lss` + :func:`lss_summary` — Language Steering Shift (Rahmanisa et al. 2025) on parallel
  facts (:func:`load_facts`, the bundled fixture; :func:`load_mlama`, mLAMA from the Hub);
* :func:`wilson` — the Wilson score interval.

Tokens (as :func:`~.record.record` counts them): each sentence is one sequence with the
tokenizer's BOS prepended; the NLL predicts tokens 1..n from their prefix, so BOS is never a target,
and padding never counts. Baseline, intervention and control always see the same token batches.
"""

import json
import math
import numbers
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from .corpus import Corpus, load_corpus
from .errors import LangNeuronsError, choices
from .identify import random_like
from .intervene import DiffMean, Intervention, _number, _positions, diffmeans, intervene
from .langid import detect
from .neurons import LanguageNeurons

CONDITIONS = ("baseline", "intervention", "control")
CONTROLS = ("random", None)
STEER_MODES = ("set", "scale", "add")
# Defaults of steer(): set the target's neurons to FACTOR × their mean activation on the target
# language (Kojima-style forcing), sampled at T = 0.8 with top-k 50, 24 new tokens. Measured on the
# built-in model with steer_sweep (LAPE on en de fr es ru zh ja ar hi th, 1,000 'stats' sentences
# each; BOS-only prompts; mean target-language rate over the 9 non-English targets; seed 0, 16-32
# generations per target): with the 5% sets, set × {4, 8, 12, 16, 20, 24, 32} gave 8%, 25%, 40%,
# 43–49%, 41%, 46%, 37% and add × 16 41–49%, so set × 16 is the default; the larger 10% sets need
# less. The README ("Steering the built-in model") has the commands of the fresh-seed checks:
# 5% sets at × 16 43%, 10% sets at × 8 52% (baseline 1%, random control 4–6%).
DEFAULT_MODE = "set"
DEFAULT_FACTOR = 16.0
DEFAULT_STATISTIC = "mean"
# Decoding: sampling at T = 0.8 as Kojima et al.; top-k 50 and 24 new tokens as on the first
# organism (shared/ORGANISM.md); enough text for the language identifier, and fast on a CPU (every
# step recomputes the whole sequence, see _generate).
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 50
DEFAULT_MAX_NEW_TOKENS = 24
# Scripts written without spaces between words: prompts are cut by characters, objects are joined
# to prompts without a space.
_NO_SPACE = {"zh": 2, "ja": 2, "th": 4}  # characters per "word" when cutting a prompt
_Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


# ---------------------------------------------------------------------------------------------
# Small helpers


def wilson(k, n, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (default 95%); ``(nan, nan)`` if n = 0."""
    if isinstance(k, bool) or isinstance(n, bool) or not isinstance(k, numbers.Integral) \
            or not isinstance(n, numbers.Integral) or n < 0 or not 0 <= k <= n:
        raise LangNeuronsError(f"wilson needs integers 0 ≤ k ≤ n, got k={k!r}, n={n!r}")
    if n == 0:
        return math.nan, math.nan
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # the interval always holds p (its bound is exactly 0 at k = 0 and 1 at k = n); clamping to p
    # removes the rounding that would leave it a hair outside (e.g. a lower bound of 3e-17 at k = 0)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pos_int(name: str, v, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if not _is_int(v) or v < 1:
        raise LangNeuronsError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {v!r}")
    return int(v)


def _texts(corpus) -> dict[str, list[str]]:
    if isinstance(corpus, Corpus):
        return corpus.texts
    if isinstance(corpus, dict):
        return corpus
    raise LangNeuronsError(f"corpus must be a Corpus or a dict of sentence lists, got {type(corpus).__name__}")


def _languages(requested, available, what: str) -> list[str]:
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [x for x in requested.split(",") if x]
    out = list(requested)
    missing = [k for k in out if k not in available]
    if missing:
        raise LangNeuronsError(f"language {missing[0]!r} is not in {what}; available: {choices(available)}")
    if not out:
        raise LangNeuronsError(f"no languages given; {what} has: {choices(available)}")
    return out


def _check_neurons(neurons) -> LanguageNeurons:
    if not isinstance(neurons, LanguageNeurons):
        raise LangNeuronsError(f"neurons must be a LanguageNeurons set (it carries the site and the layer "
                               f"profile the random control copies), got {type(neurons).__name__}")
    return neurons


def _check_control(control) -> None:
    if control not in CONTROLS:
        raise LangNeuronsError(f"unknown control {control!r}; allowed: {choices(CONTROLS)}")


def _bos(model) -> list[int]:
    bos = getattr(model.tokenizer, "bos_token_id", None)
    return [] if bos is None else [int(bos)]


def _encode(model, text: str) -> list[int]:
    """BOS (if the tokenizer has one) + the text's tokens, as the recorder tokenizes."""
    return _bos(model) + list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


def _pad_id(model) -> int:
    tok = model.tokenizer
    for v in (tok.pad_token_id, tok.eos_token_id):
        if v is not None:
            return int(v)
    return 0


@contextmanager
def _maybe_intervene(model, items, positions="all"):
    """``intervene`` for a non-empty list of items, else nothing; yields the handle or ``None``."""
    if not items:
        yield None
    else:
        with intervene(model, list(items), positions=positions) as handle:
            yield handle


def _as_items(interventions) -> list:
    if interventions is None:
        return []
    items = list(interventions) if isinstance(interventions, (list, tuple)) else [interventions]
    bad = [x for x in items if not isinstance(x, (Intervention, DiffMean))]
    if bad:
        raise LangNeuronsError(f"interventions must be an Intervention, a DiffMean or a list of them, "
                               f"got {type(bad[0]).__name__}")
    return items


# ---------------------------------------------------------------------------------------------
# NLL and the perplexity matrix


def _nll_batches(model, texts: dict[str, list[str]], languages: list[str], batch_size: int,
                 max_sentences: int | None) -> list:
    from .record import prepare_batches

    if model.tokenizer is None:
        raise LangNeuronsError("the model has no tokenizer; load it with load_model")
    max_len = int(getattr(model.cfg, "n_ctx", 2048) or 2048)
    batches, _, _, _ = prepare_batches(model.tokenizer, {k: texts[k] for k in languages}, batch_size, max_len,
                                       max_sentences)
    return batches


def token_nll(model, tokens: Int64[Tensor, "batch pos"], attention_mask: Int64[Tensor, "batch pos"]
              ) -> Float[Tensor, "batch pos-1"]:
    """NLL of each token ``t ≥ 1`` given tokens ``< t`` (float32; padding positions hold garbage)."""
    device = model.cfg.device
    logits = model(tokens.to(device), attention_mask=attention_mask.to(device), return_type="logits")
    V = logits.shape[-1]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1).to(device),
                          reduction="none")
    return nll.reshape(tokens.shape[0], tokens.shape[1] - 1)


def _nll_sums(model, batches, n_langs: int, items: list, positions, desc: str, progress: bool
              ) -> tuple[Tensor, Tensor]:
    """Summed NLL and counted targets per language over ``batches`` under ``items``."""
    sums = torch.zeros(n_langs, dtype=torch.float64)
    counts = torch.zeros(n_langs, dtype=torch.float64)
    with torch.no_grad(), _maybe_intervene(model, items, positions) as handle:
        for b in tqdm(batches, desc=desc, disable=not progress, leave=False):
            if handle is not None:
                handle.reset()
            nll = token_nll(model, b.tokens, b.attention_mask)
            # targets are tokens 1..n of each row: the recorder's counted tokens (never BOS, never padding)
            w = b.counted[:, 1:].to(nll.device)
            sums[b.language] += float((nll.double() * w).sum())
            counts[b.language] += float(w.sum())
    return sums, counts


def _nll_frame(languages: list[str], sums: Tensor, counts: Tensor) -> pd.DataFrame:
    rows = []
    for k, lang in enumerate(languages):
        n = int(counts[k])
        nll = float(sums[k] / counts[k]) if n else math.nan
        rows.append({"language": lang, "nll": nll, "ppl": math.exp(nll) if n else math.nan, "n_tokens": n})
    return pd.DataFrame(rows)


def nll_per_language(model, corpus, languages: list[str] | None = None, batch_size: int = 16,
                     max_sentences: int | None = None, interventions=None, positions="all",
                     progress: bool = True) -> pd.DataFrame:
    """Mean NLL per token (nats) and perplexity of each language's text.

    Args:
        corpus: a :class:`Corpus` or ``{language: [sentences]}``; one sentence per sequence, BOS
            prepended; the targets are tokens 1..n of each sentence (what :func:`record` counts).
        languages: which languages (default: all in the corpus).
        max_sentences: the first N sentences of each language.
        interventions: ``None`` (clean), or an :class:`Intervention` / :class:`DiffMean` / a list
            of them, applied with :func:`intervene` around every forward pass.
        positions: the interventions' default positions (see :mod:`.intervene`).

    Returns:
        one row per language: ``language, nll, ppl, n_tokens``.
    """
    texts = _texts(corpus)
    languages = _languages(languages, list(texts), "the corpus")
    batch_size = _pos_int("batch_size", batch_size)
    max_sentences = _pos_int("max_sentences", max_sentences, allow_none=True)
    items = _as_items(interventions)
    batches = _nll_batches(model, texts, languages, batch_size, max_sentences)
    sums, counts = _nll_sums(model, batches, len(languages), items, positions, "nll", progress)
    return _nll_frame(languages, sums, counts)


def perplexity_matrix(model, corpus, neurons, languages: list[str] | None = None,
                      control: str | None = "random", seed: int = 0, batch_size: int = 16,
                      max_sentences: int | None = None, ablated: list[str] | None = None,
                      progress: bool = True) -> pd.DataFrame:
    """Tang et al.'s deactivation matrix: NLL of every evaluated language with each language's neurons zeroed.

    Args:
        corpus: held-out text (e.g. ``load_corpus("builtin", split="eval")``).
        neurons: a :class:`LanguageNeurons` set; language *i*'s neurons are set to 0 (``mode="zero"``)
            at the set's site, at every position.
        languages: the evaluated languages (default: the set's languages that the corpus has).
        control: ``"random"`` — also ablate :func:`~.identify.random_like` neurons (same count per
            layer) of each ablated language; ``None`` — no control.
        seed: the random control's seed.
        ablated: whose neurons are switched off (default: ``languages``, those of them in the set).

    Returns:
        one row per ablated × evaluated language × condition (``baseline``, ``intervention``,
        ``control``): ``ablated, evaluated, condition, nll, ppl, n_tokens, n_neurons``. All three
        conditions use exactly the same tokens; the baseline is computed once per evaluated
        language and repeated in every row.
    """
    neurons = _check_neurons(neurons)
    _check_control(control)
    texts = _texts(corpus)
    if languages is None:
        languages = [k for k in neurons.languages if k in texts]
        if not languages:
            raise LangNeuronsError(f"none of the neuron set's languages ({choices(neurons.languages)}) is in the "
                                   f"corpus ({choices(texts)}); name the evaluated languages with languages=")
    languages = _languages(languages, list(texts), "the corpus")
    if ablated is None:
        ablated = [k for k in languages if k in neurons]
        if not ablated:
            raise LangNeuronsError(f"none of the evaluated languages is in the neuron set; available: "
                                   f"{choices(neurons.languages)}")
    ablated = _languages(ablated, neurons.languages, "the neuron set")
    batch_size = _pos_int("batch_size", batch_size)
    max_sentences = _pos_int("max_sentences", max_sentences, allow_none=True)
    ctrl = random_like(neurons.select(ablated), seed) if control == "random" else None

    batches = _nll_batches(model, texts, languages, batch_size, max_sentences)
    K = len(languages)
    base = _nll_frame(languages, *_nll_sums(model, batches, K, [], "all", "ppl baseline", progress))
    rows = []
    for a in tqdm(ablated, desc="ppl matrix", disable=not progress, leave=False):
        n_neurons = len(neurons.neurons[a])
        conds = {"intervention": _nll_frame(languages, *_nll_sums(
            model, batches, K, [Intervention(neurons, "zero", language=a)], "all", f"ppl −{a}", progress))}
        if ctrl is not None:
            conds["control"] = _nll_frame(languages, *_nll_sums(
                model, batches, K, [Intervention(ctrl, "zero", language=a)], "all", f"ppl −{a} control", progress))
        for cond, frame in (("baseline", base), *conds.items()):
            for r in frame.itertuples(index=False):
                rows.append({"ablated": a, "evaluated": r.language, "condition": cond, "nll": r.nll, "ppl": r.ppl,
                             "n_tokens": r.n_tokens, "n_neurons": n_neurons})
    return pd.DataFrame(rows, columns=["ablated", "evaluated", "condition", "nll", "ppl", "n_tokens", "n_neurons"])


def _ratio(num: float, den: float) -> float:
    """``num / den`` for a positive denominator; ``inf`` when only the numerator is positive, else nan."""
    if not (math.isfinite(num) and math.isfinite(den)):
        return math.nan
    if den > 0:
        return num / den
    return math.inf if num > 0 else math.nan


def delta_matrix(df: pd.DataFrame, condition: str = "intervention") -> pd.DataFrame:
    """ΔNLL = NLL(condition) − NLL(baseline) as an ablated × evaluated matrix (from :func:`perplexity_matrix`)."""
    missing = {"ablated", "evaluated", "condition", "nll"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not a perplexity-matrix frame: it lacks the column(s) {choices(sorted(missing))}")
    if condition not in set(df["condition"]):
        raise LangNeuronsError(f"the frame has no rows of condition {condition!r}; it has: "
                               f"{choices(sorted(set(df['condition'])))}")
    pivot = lambda c: df[df["condition"] == c].pivot(index="ablated", columns="evaluated", values="nll")  # noqa: E731
    cond, base = pivot(condition), pivot("baseline")
    rows = list(dict.fromkeys(df["ablated"]))
    cols = list(dict.fromkeys(df["evaluated"]))
    return (cond - base).loc[rows, cols]


def perplexity_summary(df: pd.DataFrame) -> dict:
    """The headline numbers of a perplexity matrix.

    Returns a dict with
      * ``diag_delta_nll`` — mean ΔNLL of the ablated language on itself (the diagonal);
      * ``offdiag_delta_nll`` — mean ΔNLL of the other languages (off-diagonal cells);
      * ``control_diag_delta_nll`` / ``control_offdiag_delta_nll`` — the same for the random control;
      * ``diag_over_offdiag`` and ``diag_over_control`` — the ratios (``inf`` if only the numerator
        is positive, ``nan`` if neither is);
      * ``frac_most_hurt`` — the fraction of ablated languages (that are also evaluated) whose own
        ΔNLL is strictly the largest of their row;
      * ``n_ablated``, ``n_evaluated``.
    Diagonal cells exist only for ablated languages that are also evaluated.
    """
    delta = delta_matrix(df, "intervention")
    has_control = "control" in set(df["condition"])
    ctrl = delta_matrix(df, "control") if has_control else None

    def split(m: pd.DataFrame) -> tuple[list[float], list[float]]:
        diag, off = [], []
        for a in m.index:
            for e in m.columns:
                (diag if a == e else off).append(float(m.loc[a, e]))
        return diag, off

    mean = lambda xs: float(sum(xs) / len(xs)) if xs else math.nan  # noqa: E731
    diag, off = split(delta)
    out = {"diag_delta_nll": mean(diag), "offdiag_delta_nll": mean(off)}
    if ctrl is not None:
        cdiag, coff = split(ctrl)
        out.update(control_diag_delta_nll=mean(cdiag), control_offdiag_delta_nll=mean(coff))
    else:
        out.update(control_diag_delta_nll=math.nan, control_offdiag_delta_nll=math.nan)
    out["diag_over_offdiag"] = _ratio(out["diag_delta_nll"], out["offdiag_delta_nll"])
    out["diag_over_control"] = _ratio(out["diag_delta_nll"], out["control_diag_delta_nll"])
    hurt = []
    for a in delta.index:
        if a in delta.columns:
            others = [float(delta.loc[a, e]) for e in delta.columns if e != a]
            hurt.append(not others or float(delta.loc[a, a]) > max(others))
    out["frac_most_hurt"] = mean([float(h) for h in hurt])
    out["n_ablated"], out["n_evaluated"] = int(len(delta.index)), int(len(delta.columns))
    return out


# ---------------------------------------------------------------------------------------------
# Steering: generation + language identification


def _cut(text: str, language: str, words: int) -> str | None:
    """The first ``words`` words of ``text`` (characters for scripts without spaces), or None if too short."""
    per = _NO_SPACE.get(language)
    if per is not None:
        n = per * words
        return text[:n].rstrip() if len(text) > n + 2 else None
    parts = text.split()
    return " ".join(parts[:words]) if len(parts) > words else None


def default_prompts(target: str | None = None, n_prompts: int = 16, words: int = 3, source=None,
                    seed: int = 0) -> list[tuple[str, str]]:
    """Neutral prompts: the first ``words`` words of sentences of the built-in ``parallel`` split.

    ``source`` names the prompt language(s); by default every language of the parallel split but
    the target, in turn (prompt *i* is in ``sources[i % len(sources)]``), so a continuation in the
    target language is a switch of language, not a continuation of the prompt's language. Sentences
    are drawn without replacement with ``seed``; each prompt comes from a different source sentence.
    Steering away from a prompt's language is harder than steering unconditional generation
    (``prompts=[""]``, BOS only), so report which prompts a rate was measured on.

    Returns ``[(prompt, prompt_language), ...]``.
    """
    n_prompts, words = _pos_int("n_prompts", n_prompts), _pos_int("prompt_words", words)
    parallel = load_corpus("builtin", split="parallel")
    if source is None:
        sources = [k for k in parallel.languages if k != target]
    else:
        sources = [source] if isinstance(source, str) else list(source)
        _languages(sources, parallel.languages, "the built-in parallel split")
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(parallel[sources[0]]), generator=g).tolist()
    out, j = [], 0
    for i in range(n_prompts):
        lang = sources[i % len(sources)]
        while j < len(order):
            p = _cut(parallel[lang][order[j]], lang, words)
            j += 1
            if p:
                out.append((p, lang))
                break
        else:
            raise LangNeuronsError(f"the parallel split has too few sentences for {n_prompts} prompts")
    return out


def _left_pad(seqs: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(seqs), T), dtype=torch.int64)
    for r, s in enumerate(seqs):
        tokens[r, T - len(s):] = torch.tensor(s, dtype=torch.int64)
        mask[r, T - len(s):] = 1
    return tokens, mask


@contextmanager
def _seeded(model, seed: int):
    """Seed torch's generator(s) for a block and restore the caller's random state afterwards."""
    device = torch.device(model.cfg.device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _generate(model, rows: list[list[int]], items: list, positions, gen: dict, batch_size: int, seed: int,
              desc: str, progress: bool) -> list[str]:
    """Continuations (text after the prompt, up to EOS) of every row of prompt tokens, under ``items``.

    The bridge's ``generate`` is given token ids, not strings: for strings it decides BOS by
    ``cfg.default_prepend_bos`` and returns prompt + continuation decoded together, while here the
    prompt is tokenized exactly as the recorder does (BOS + text), left-padded with an explicit
    attention mask (every row's prompt ends at the same column, so ``prompt``/``generated``
    positions mean the same in every row), and only the new tokens are decoded. Sampling draws
    from torch's global generator, hence :func:`_seeded`.

    Without a KV cache: with transformers 5.24, TransformerLens 4.3's ``TransformerBridge.generate``
    with ``use_past_kv_cache=True`` gives other tokens than the Hugging Face model it wraps on Llama
    models (the built-in model's greedy text degenerates into ``"SA....."``; right with
    transformers 5.23; ``test_generation_matches_hugging_face`` is the oracle), while recomputing
    the whole sequence at every step gives the Hugging Face model's tokens with either version.
    Measurements must not depend on which transformers a user has, so this costs several times
    the generation time of the cached path (6× in one measurement on the built-in model, 64 rows ×
    32 tokens). ``last`` (the cached meaning: the
    last prompt token, then each new token as it is produced) becomes the explicit positions
    ``P−1 … P+max_new_tokens−1``, which is what the cached run intervenes on.
    """
    eos = model.tokenizer.eos_token_id
    out: list[str] = []
    n_new = gen["max_new_tokens"]
    with torch.no_grad(), _seeded(model, seed):
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = rows[start:start + batch_size]
            tokens, mask = _left_pad(chunk, _pad_id(model))
            P = tokens.shape[1]
            pos = tuple(range(P - 1, P + n_new)) if positions == "last" else positions
            # one context per batch: positions (prompt/generated) start again at 0 for each sequence
            with _maybe_intervene(model, items, pos):
                seqs = model.generate(tokens.to(model.cfg.device), attention_mask=mask.to(model.cfg.device),
                                      return_type="tokens", verbose=False, use_past_kv_cache=False, **gen)
            for row in seqs[:, P:].tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                out.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def _gen_kwargs(max_new_tokens, temperature, top_k, greedy, repetition_penalty) -> dict:
    max_new_tokens = _pos_int("max_new_tokens", max_new_tokens)
    if not isinstance(greedy, bool):
        raise LangNeuronsError(f"greedy must be True or False, got {greedy!r}")
    rp = _number("repetition_penalty", repetition_penalty)
    if rp <= 0:
        raise LangNeuronsError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    gen = {"max_new_tokens": max_new_tokens, "stop_at_eos": True, "repetition_penalty": rp}
    if greedy:
        gen["do_sample"] = False
        return gen
    t = _number("temperature", temperature)
    if t <= 0:
        raise LangNeuronsError(f"temperature must be > 0 when sampling (use greedy=True for greedy decoding), got {temperature!r}")
    gen.update(do_sample=True, temperature=t, top_k=_pos_int("top_k", top_k, allow_none=True))
    return gen


def _prompt_list(prompts, target, n_prompts, prompt_words, source, seed) -> list[tuple[str, str | None]]:
    if prompts is None:
        return default_prompts(target, n_prompts, prompt_words, source, seed)
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise LangNeuronsError(f"prompts must be a non-empty list of strings ('' = BOS only), got {prompts!r}")
    return [(p, None) for p in prompts]


def _steer_item(neurons, target: str, mode: str, factor, stats, statistic: str) -> Intervention:
    if mode not in STEER_MODES:
        raise LangNeuronsError(f"unknown steering mode {mode!r}; allowed: {choices(STEER_MODES)}")
    if mode in ("set", "add") and stats is None:
        raise LangNeuronsError(f"mode {mode!r} needs stats= (recorded statistics whose {statistic!r} of {target!r} "
                               "is the value to set/add); mode 'scale' needs none")
    if mode == "scale":
        return Intervention(neurons, "scale", factor=factor, language=target)
    return Intervention(neurons, mode, factor=factor, stats=stats, statistic=statistic, language=target)


def _check_target(neurons, target) -> str:
    if not isinstance(target, str) or target not in neurons:
        raise LangNeuronsError(f"unknown target language {target!r}; the neuron set has: {choices(neurons.languages)}")
    return target


def _positions_list(positions) -> list:
    if isinstance(positions, str) or positions is None:
        return [_positions(positions or "all")]
    if isinstance(positions, (list, tuple)) and positions and all(isinstance(p, str) for p in positions):
        return [_positions(p) for p in positions]
    return [_positions(positions)]  # a list of absolute positions


def steer_sweep(model, neurons, targets, factors, modes=(DEFAULT_MODE,), prompts=None,
                stats=None, statistic: str = DEFAULT_STATISTIC, n_samples: int = 4,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE,
                top_k: int | None = DEFAULT_TOP_K, greedy: bool = False, seed: int = 0, control: str | None = "random",
                positions="all", *, source=None, n_prompts: int = 16, prompt_words: int = 3,
                repetition_penalty: float = 1.0, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """:func:`steer` over a grid of targets × modes × factors (× positions, if a list of names).

    The baseline generations (no intervention) of a target do not depend on the mode or factor,
    so they are generated once per target and repeated under every grid cell of that target.
    """
    neurons = _check_neurons(neurons)
    _check_control(control)
    targets = [targets] if isinstance(targets, str) else list(targets)
    for t in targets:
        _check_target(neurons, t)
    modes = [modes] if isinstance(modes, str) else list(modes)
    factors = [factors] if isinstance(factors, numbers.Real) and not isinstance(factors, bool) else list(factors)
    if not targets or not modes or not factors:
        raise LangNeuronsError("targets, modes and factors must each hold at least one value")
    factors = [_number("factor", f) for f in factors]
    pos_list = _positions_list(positions)
    n_samples, batch_size = _pos_int("n_samples", n_samples), _pos_int("batch_size", batch_size)
    gen = _gen_kwargs(max_new_tokens, temperature, top_k, greedy, repetition_penalty)
    if greedy:
        n_samples = 1  # greedy decoding gives one continuation per prompt
    ctrl_all = random_like(neurons.select(targets), seed) if control == "random" else None
    # build every intervention before generating anything: a bad argument fails fast
    cells = [(m, f, p) for m in modes for f in factors for p in pos_list]
    plan = {t: {c: (_steer_item(neurons, t, c[0], c[1], stats, statistic),
                    _steer_item(ctrl_all, t, c[0], c[1], stats, statistic) if ctrl_all is not None else None)
                for c in cells} for t in targets}

    frames = []
    for t in tqdm(targets, desc="steer", disable=not progress, leave=False):
        plist = _prompt_list(prompts, t, n_prompts, prompt_words, source, seed)
        rows = [(i, s, p, lang) for i, (p, lang) in enumerate(plist) for s in range(n_samples)]
        toks = [_encode(model, p) for _, _, p, _ in rows]
        # the same seed for every condition: they differ only by the intervention (common random numbers)
        base = _generate(model, toks, [], "all", gen, batch_size, seed, f"steer {t} baseline", progress)
        base_det = detect(base)
        for (mode, factor, pos) in cells:
            iv, civ = plan[t][(mode, factor, pos)]
            outs = {"baseline": (base, base_det)}
            g = _generate(model, toks, [iv], pos, gen, batch_size, seed, f"steer {t} {mode}×{factor:g}", progress)
            outs["intervention"] = (g, detect(g))
            if civ is not None:
                g = _generate(model, toks, [civ], pos, gen, batch_size, seed, f"steer {t} control", progress)
                outs["control"] = (g, detect(g))
            pos_label = pos if isinstance(pos, str) else ",".join(map(str, pos))
            records = []
            for cond, (texts, dets) in outs.items():
                for (i, s, p, lang), text, d in zip(rows, texts, dets):
                    records.append({"target": t, "condition": cond, "mode": mode, "factor": factor,
                                    "statistic": statistic if mode != "scale" else None, "positions": pos_label,
                                    "prompt_id": i, "prompt_language": lang, "prompt": p, "sample": s,
                                    "generation": text, "detected": d})
            frames.append(pd.DataFrame(records))
    return pd.concat(frames, ignore_index=True)


def steer(model, neurons, target: str, prompts=None, stats=None, mode: str = DEFAULT_MODE,
          factor=DEFAULT_FACTOR, statistic: str = DEFAULT_STATISTIC, n_samples: int = 4,
          max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE,
          top_k: int | None = DEFAULT_TOP_K, greedy: bool = False, seed: int = 0, control: str | None = "random",
          positions="all", *, source=None, n_prompts: int = 16, prompt_words: int = 3,
          repetition_penalty: float = 1.0, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Generate under an intervention on ``target``'s neurons and identify the output language.

    The same prompts are generated three times — under the intervention, without it
    (``baseline``) and under the same intervention on :func:`~.identify.random_like` neurons of
    the target (``control``: same count per layer; ``set``/``add`` use the *target's* statistics
    of those neurons) — with the same seed, so the conditions differ only by the intervention.
    The language of the continuation alone (never the prompt) is identified with :mod:`.langid`.

    Args:
        neurons: a :class:`LanguageNeurons` set holding ``target``.
        target: the language to steer towards.
        prompts: ``None`` — :func:`default_prompts`: ``n_prompts`` neutral prompts, the first
            ``prompt_words`` words of built-in ``parallel`` sentences, in every other language in
            turn (or in ``source``); a string or a list of strings (``""`` = BOS only, i.e.
            unconditional generation).
        stats: :class:`NeuronStats` at the neurons' site; needed by ``set`` and ``add``.
        mode: ``set`` (``a := factor · statistic``, default), ``scale`` (``a := factor · a``) or
            ``add`` (``a := a + factor · statistic``).
        factor: α (default 16: "set to 16× the mean activation on the target language").
        statistic: which statistic of the target language (``mean``, ``median``, ``max``, ``q0.9`` …).
        n_samples: continuations per prompt (one with ``greedy``).
        max_new_tokens, temperature, top_k, repetition_penalty: decoding; sampling unless ``greedy``
            (defaults: 24 new tokens, T = 0.8, top-k 50, see ``DEFAULT_*``).
        seed: seeds sampling (the caller's random state is restored afterwards) and the prompts and
            the random control. The same arguments give the same rows.
        control: ``"random"`` or ``None``.
        positions: ``all`` (default), ``prompt``, ``generated``, ``last`` or a list of positions;
            absolute positions of the left-padded batch (every row's prompt ends at the same column).
        batch_size: rows (prompt × sample) per ``generate`` call.

    Returns:
        one row per generation: ``target, condition, mode, factor, statistic, positions, prompt_id,
        prompt_language, prompt, sample, generation, detected``; ``generation`` is the continuation
        only. Summarise with :func:`steer_summary`.
    """
    neurons = _check_neurons(neurons)
    _check_target(neurons, target)
    return steer_sweep(model, neurons, [target], [factor], [mode], prompts, stats, statistic, n_samples,
                       max_new_tokens, temperature, top_k, greedy, seed, control, positions, source=source,
                       n_prompts=n_prompts, prompt_words=prompt_words, repetition_penalty=repetition_penalty,
                       batch_size=batch_size, progress=progress)


def steer_with(model, target: str, interventions, control=None, prompts=None, *, baseline: bool = True,
               n_samples: int = 4, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               temperature: float = DEFAULT_TEMPERATURE, top_k: int | None = DEFAULT_TOP_K, greedy: bool = False,
               seed: int = 0, positions="all", source=None, n_prompts: int = 16, prompt_words: int = 3,
               repetition_penalty: float = 1.0, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """:func:`steer` under interventions the caller builds, for steering that is not one mode on
    the target's neurons — e.g. Gurgurov et al.'s (2025) language arithmetic, a list of two::

        steer_with(model, "de", [Intervention(neurons, "zero", language="en"),
                                 Intervention(neurons, "add", factor=1.0, stats=stats, language="de")],
                   control=[Intervention(ctrl, "zero", language="en"),
                            Intervention(ctrl, "add", factor=1.0, stats=stats, language="de")],
                   source="en")

    Generation, seeding, prompts and language identification are :func:`steer`'s: every condition
    generates from the same prompts with the same seed, so they differ only by the interventions.

    Args:
        target: the language whose rate is measured (only compared with the identified language).
        interventions: an :class:`Intervention`, a :class:`DiffMean` or a list of them, applied
            together (in order) in the ``intervention`` condition.
        control: the same for the ``control`` condition (build it on
            :func:`~.identify.random_like` sets), or ``None`` for none.
        baseline: also generate without intervention (``False`` where the caller already has
            the baseline of these prompts, e.g. across a factor grid).
        prompts, source, n_prompts, prompt_words: as in :func:`steer` (the default prompts are in
            every language but ``target``, or in ``source``).
        the rest: decoding and batching, as in :func:`steer`.

    Returns:
        one row per generation: ``target, condition, positions, prompt_id, prompt_language, prompt,
        sample, generation, detected`` (conditions in the order baseline, intervention, control);
        summarise with :func:`steer_summary`.
    """
    if not isinstance(target, str) or not target:
        raise LangNeuronsError(f"target must be a language code, got {target!r}")
    items = _as_items(interventions)
    if not items:
        raise LangNeuronsError("steer_with needs at least one intervention")
    ctrl = _as_items(control)
    if control is not None and not ctrl:
        raise LangNeuronsError("control must hold at least one intervention, or be None")
    if not isinstance(baseline, bool):
        raise LangNeuronsError(f"baseline must be True or False, got {baseline!r}")
    pos = _positions(positions)
    n_samples, batch_size = _pos_int("n_samples", n_samples), _pos_int("batch_size", batch_size)
    gen = _gen_kwargs(max_new_tokens, temperature, top_k, greedy, repetition_penalty)
    if greedy:
        n_samples = 1  # greedy decoding gives one continuation per prompt
    plist = _prompt_list(prompts, target, n_prompts, prompt_words, source, seed)
    rows = [(i, s, p, lang) for i, (p, lang) in enumerate(plist) for s in range(n_samples)]
    toks = [_encode(model, p) for _, _, p, _ in rows]
    conds = {"baseline": []} if baseline else {}
    conds["intervention"] = items
    if ctrl:
        conds["control"] = ctrl
    pos_label = pos if isinstance(pos, str) else ",".join(map(str, pos))
    records = []
    for cond, its in conds.items():
        texts = _generate(model, toks, its, pos if its else "all", gen, batch_size, seed, f"steer {target} {cond}",
                          progress)
        for (i, s, p, lang), text, d in zip(rows, texts, detect(texts)):
            records.append({"target": target, "condition": cond, "positions": pos_label, "prompt_id": i,
                            "prompt_language": lang, "prompt": p, "sample": s, "generation": text, "detected": d})
    return pd.DataFrame(records, columns=["target", "condition", "positions", "prompt_id", "prompt_language", "prompt",
                                          "sample", "generation", "detected"])


def random_direction_like(steer: DiffMean, seed: int = 0) -> DiffMean:
    """The control of a :class:`DiffMean`: a random (Gaussian, seeded) direction of the same norm
    at the same layer and strength, so the control moves the residual stream as far, in no
    particular language's direction."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(steer.direction.shape, generator=g, dtype=torch.float64)
    return replace(steer, direction=(r / r.norm() * steer.direction.double().norm()).to(steer.direction.dtype))


def diffmean_sweep(model, corpus, targets, layer: int, betas, prompts=None, control: str | None = "random",
                   *, languages: list[str] | None = None, max_sentences: int | None = None,
                   n_samples: int = 4, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   temperature: float = DEFAULT_TEMPERATURE, top_k: int | None = DEFAULT_TOP_K,
                   greedy: bool = False, seed: int = 0, positions="all", source=None, n_prompts: int = 16,
                   prompt_words: int = 3, repetition_penalty: float = 1.0, batch_size: int = 64,
                   progress: bool = True) -> pd.DataFrame:
    """Residual-stream difference-of-means steering (:func:`~.intervene.diffmean`) over a grid of
    targets × strengths β, measured exactly as :func:`steer_sweep` measures neuron steering.

    Per target: the direction ``mean(resid | target) − mean(resid | other languages)`` after block
    ``layer``, from ``corpus`` (e.g. the built-in ``stats`` split, the text the neurons were found
    on); then generations with ``β · direction`` added at every position, without it
    (``baseline``, generated once per target) and with a random direction of the same norm
    (``control``, :func:`random_direction_like`), same prompts and seed.

    Returns:
        :func:`steer_sweep`'s columns, with ``mode = "diffmean"`` and ``factor = β`` (so
        :func:`steer_summary` and the steering writers and figures take it), plus ``layer``.
    """
    _check_control(control)
    texts = _texts(corpus)
    targets = [targets] if isinstance(targets, str) else list(targets)
    betas = [betas] if isinstance(betas, numbers.Real) and not isinstance(betas, bool) else list(betas)
    if not targets or not betas:
        raise LangNeuronsError("targets and betas must each hold at least one value")
    betas = [_number("beta", b) for b in betas]
    frames = []
    # every target's direction from one pass over the corpus
    directions = diffmeans(model, texts, targets, layer, languages=languages, max_sentences=max_sentences,
                           progress=progress)
    for t, d in tqdm(list(zip(targets, directions)), desc="diffmean steer", disable=not progress, leave=False):
        ctrl = random_direction_like(d, seed) if control == "random" else None
        kw = dict(prompts=prompts, n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                  top_k=top_k, greedy=greedy, seed=seed, positions=positions, source=source, n_prompts=n_prompts,
                  prompt_words=prompt_words, repetition_penalty=repetition_penalty, batch_size=batch_size,
                  progress=progress)
        base = None
        for b in betas:
            df = steer_with(model, t, [d.with_beta(b)], control=[ctrl.with_beta(b)] if ctrl else None,
                            baseline=base is None, **kw)
            if base is None:
                base = df[df.condition == "baseline"]
            else:  # the baseline does not depend on β: generated once, repeated in every cell
                df = pd.concat([base, df], ignore_index=True)
            df.insert(2, "mode", "diffmean")
            df.insert(3, "factor", b)
            df.insert(4, "statistic", None)
            df["layer"] = int(layer)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def steer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Target-language rates with Wilson 95% intervals per target (and per grid cell of a sweep).

    Returns one row per ``target`` (× ``mode``, ``factor``, ``statistic``, ``positions`` where the
    frame has them) with ``n`` and, for each condition present, ``<condition>_rate``,
    ``<condition>_low``, ``<condition>_high`` — the intervention's columns are named
    ``target_rate``, ``target_low``, ``target_high``.
    """
    missing = {"target", "condition", "detected"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not a steering frame: it lacks the column(s) {choices(sorted(missing))}")
    keys = [k for k in ("target", "mode", "factor", "statistic", "positions") if k in df.columns]
    names = {"intervention": "target", "baseline": "baseline", "control": "control"}
    out = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row["n"] = int(g["condition"].value_counts().iloc[0])  # generations per condition
        for cond, name in names.items():
            sub = g[g["condition"] == cond]
            if len(sub) == 0:
                continue
            k = int((sub["detected"] == row["target"]).sum())
            lo, hi = wilson(k, len(sub))
            row[f"{name}_rate"], row[f"{name}_low"], row[f"{name}_high"] = k / len(sub), lo, hi
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# LSS: Language Steering Shift on parallel facts


def _facts_path() -> Path:
    return Path(str(resources.files("tl_langneurons") / "assets" / "facts.json"))


def _check_items(items, where: str) -> list[dict]:
    if not isinstance(items, (list, tuple)) or not items:
        raise LangNeuronsError(f"{where}: items must be a non-empty list of "
                               "{'id', 'prompt': {lang: text}, 'object': {lang: text}} dicts")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("prompt"), dict) or not isinstance(it.get("object"), dict):
            raise LangNeuronsError(f"{where}: item {i} must be a dict with 'prompt' and 'object' dicts "
                                   f"({{language: text}}), got {it!r}")
    return list(items)


def load_facts(path=None, languages: list[str] | None = None) -> list[dict]:
    """Parallel facts for :func:`lss`: the bundled fixture (en, de, fr, es, ru) or a JSON file like it.

    The file holds ``{"format": "tl_langneurons.facts/1", "items": [{"id", "relation",
    "prompt": {lang: text}, "object": {lang: text}}, ...]}``; the object follows the prompt after
    one space (none for zh, ja, th). ``languages`` keeps only the items that have all of them.
    """
    p = _facts_path() if path is None else Path(path)
    if not p.is_file():
        raise LangNeuronsError(f"no facts file at {str(p)!r}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LangNeuronsError(f"{str(p)!r} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("format") != "tl_langneurons.facts/1":
        raise LangNeuronsError(f"{str(p)!r} is not a facts file (format 'tl_langneurons.facts/1')")
    items = _check_items(d.get("items"), str(p))
    if languages is not None:
        languages = [languages] if isinstance(languages, str) else list(languages)
        items = [it for it in items if all(k in it["prompt"] and k in it["object"] for k in languages)]
        if not items:
            raise LangNeuronsError(f"{str(p)!r} has no item in all of {choices(languages)}; "
                                   f"it has: {choices(d.get('languages', []))}")
    return items


def load_mlama(languages: list[str], name: str = "atutej/m_lama", config: str | None = "{lang}",
               split: str | None = None, relations: list[str] | None = None, max_items: int | None = None
               ) -> list[dict]:
    """Parallel facts from mLAMA (Kassner et al. 2021) on the Hugging Face Hub, as :func:`lss` items.

    Expected layout (that of ``cis-lmu/m_lama`` and its parquet mirrors): rows with ``sub_uri``,
    ``sub_label``, ``obj_uri``, ``obj_label``, ``predicate_id`` and ``template`` (a pattern with
    ``[X]`` for the subject and ``[Y]`` for the object), either one config per language (``config``
    with ``{lang}`` in it, default) or one config holding every language with a ``language``
    column (``config`` without ``{lang}``, or ``None``). ``split=None`` takes the dataset's first
    split. Only templates that *end* with ``[Y]`` (a final period allowed) give a prompt a causal
    model can complete; a fact is kept when every language has it. Items are keyed by
    ``(predicate_id, sub_uri, obj_uri)``. Needs a network (or a warm cache).
    """
    import datasets  # heavy, and only here

    languages = [languages] if isinstance(languages, str) else list(languages)
    if len(languages) < 2:
        raise LangNeuronsError(f"load_mlama needs at least two languages, got {languages!r}")
    max_items = _pos_int("max_items", max_items, allow_none=True)
    need = {"sub_uri", "sub_label", "obj_uri", "obj_label", "predicate_id", "template"}

    def load(cfg):
        try:
            ds = datasets.load_dataset(name, cfg) if split is None else datasets.load_dataset(name, cfg, split=split)
        except Exception as e:  # noqa: BLE001 - network, missing config, script datasets: one message
            raise LangNeuronsError(f"could not load mLAMA {name!r} (config {cfg!r}): {str(e).splitlines()[0]}") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        lacking = need - set(ds.column_names)
        if lacking:
            raise LangNeuronsError(f"{name!r} lacks the mLAMA column(s) {choices(sorted(lacking))}; "
                                   f"columns: {choices(ds.column_names)}")
        return ds

    per_lang: dict[str, dict] = {}
    shared = None if (config is not None and "{lang}" in config) else load(config)
    for lang in languages:
        if shared is None:
            rows = load(config.replace("{lang}", lang))
        else:
            if "language" not in shared.column_names:
                raise LangNeuronsError(f"{name!r}: one config for all languages needs a 'language' column")
            rows = shared.filter(lambda r: r["language"] == lang)
        facts = {}
        for r in rows:
            if relations is not None and r["predicate_id"] not in relations:
                continue
            t = r["template"].strip()
            t = t[:-1].rstrip() if t.endswith((".", "。")) else t
            if not t.endswith("[Y]") or t.count("[X]") != 1:
                continue
            prompt = t[:-3].replace("[X]", r["sub_label"]).rstrip()
            facts[(r["predicate_id"], r["sub_uri"], r["obj_uri"])] = (prompt, r["obj_label"])
        per_lang[lang] = facts
    keys = [k for k in per_lang[languages[0]] if all(k in per_lang[l] for l in languages[1:])]
    if max_items is not None:
        keys = keys[:max_items]
    if not keys:
        raise LangNeuronsError(f"mLAMA {name!r} has no fact with a completable prompt in all of {choices(languages)}")
    return [{"id": f"{p}:{s}:{o}", "relation": p, "prompt": {l: per_lang[l][(p, s, o)][0] for l in languages},
             "object": {l: per_lang[l][(p, s, o)][1] for l in languages}} for p, s, o in keys]


def _continuation(model, prompt: str, obj: str, language: str) -> tuple[list[int], list[int]]:
    """``(context tokens with BOS, continuation tokens)`` of ``prompt`` completed by ``obj``.

    The whole text is tokenized once and split where the prompt's tokens end (as lm-eval-harness
    does); if the tokenizer merges across that boundary, the object is tokenized on its own.
    """
    sep = "" if language in _NO_SPACE or prompt.endswith(" ") else " "
    ctx = _encode(model, prompt)
    whole = _encode(model, prompt + sep + obj)
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, list(model.tokenizer(sep + obj, add_special_tokens=False)["input_ids"])


def _sequence_logprobs(model, seqs: list[tuple[list[int], list[int]]], items: list, positions, batch_size: int,
                       desc: str, progress: bool) -> list[float]:
    """Summed log-probability of each continuation given its context, under ``items``."""
    out = [0.0] * len(seqs)
    # with positions other than "all" the prompt length differs per row: one row per forward pass
    bs = batch_size if positions == "all" else 1
    order = sorted(range(len(seqs)), key=lambda i: -(len(seqs[i][0]) + len(seqs[i][1])))
    with torch.no_grad(), _maybe_intervene(model, items, positions) as handle:
        for start in tqdm(range(0, len(order), bs), desc=desc, disable=not progress, leave=False):
            idx = order[start:start + bs]
            full = [seqs[i][0] + seqs[i][1] for i in idx]
            T = max(len(s) for s in full)
            tokens = torch.full((len(idx), T), _pad_id(model), dtype=torch.int64)
            mask = torch.zeros((len(idx), T), dtype=torch.int64)
            target = torch.zeros((len(idx), T - 1), dtype=torch.bool)
            for r, i in enumerate(idx):
                n_ctx, n = len(seqs[i][0]), len(full[r])
                tokens[r, :n] = torch.tensor(full[r])
                mask[r, :n] = 1
                target[r, n_ctx - 1:n - 1] = True  # predictions of the continuation's tokens
            if handle is not None:
                handle.reset(len(seqs[idx[0]][0]) if bs == 1 else None)
            nll = token_nll(model, tokens, mask).double().cpu()
            lp = -(nll * target).sum(1)
            for r, i in enumerate(idx):
                out[i] = float(lp[r])
    return out


def lss(model, neurons, items: list[dict], source: str, target: str,
        factor=DEFAULT_FACTOR, stats=None, mode: str = DEFAULT_MODE, statistic: str = DEFAULT_STATISTIC,
        control: str | None = "random", seed: int = 0, positions="all", batch_size: int = 32,
        progress: bool = True) -> pd.DataFrame:
    """Language Steering Shift (Rahmanisa et al. 2025): does amplifying ``target``'s neurons pull facts towards ``target``?

    Per item, with the prompt in ``source``: ``Δ = log P(object_target | prompt) − log P(object_source
    | prompt)`` (summed token log-probabilities of each continuation). The item is *shifted* when
    Δ under the intervention on the target's neurons exceeds Δ without intervention; LSS(source →
    target) is the fraction of shifted items (:func:`lss_summary`). Items whose two objects are
    the same string (``Berlin``/``Berlin``) cannot shift and are left out.

    Args:
        items: from :func:`load_facts` or :func:`load_mlama`.
        mode, factor, stats, statistic: as in :func:`steer` (``set`` and ``add`` need ``stats``).
        control: also the same intervention on :func:`~.identify.random_like` neurons of the target.
        positions: ``all`` (default: prompt and object tokens), ``prompt``, ``last`` …; other than
            ``all``, items run one at a time.

    Returns:
        one row per item × condition (``baseline``, ``intervention``, ``control``):
        ``item, relation, source, target, condition, mode, factor, object_source, object_target,
        logp_source, logp_target, delta, delta_baseline, shifted`` (``shifted`` is False for the
        baseline rows by definition).
    """
    neurons = _check_neurons(neurons)
    _check_control(control)
    _check_target(neurons, target)
    items = _check_items(items, "lss")
    if not isinstance(source, str) or source == target:
        raise LangNeuronsError(f"source must be a language other than the target {target!r}, got {source!r}")
    pos = _positions(positions)
    batch_size = _pos_int("batch_size", batch_size)
    iv = _steer_item(neurons, target, mode, _number("factor", factor), stats, statistic)
    civ = None
    if control == "random":
        civ = _steer_item(random_like(neurons.select([target]), seed), target, mode, factor, stats, statistic)
    usable = [it for it in items if source in it["prompt"] and source in it["object"] and target in it["object"]
              and it["object"][source].strip().casefold() != it["object"][target].strip().casefold()]
    if not usable:
        raise LangNeuronsError(f"no item has a prompt in {source!r} and different objects in {source!r} and {target!r}")
    seqs = []
    for it in usable:
        prompt = it["prompt"][source]
        seqs.append(_continuation(model, prompt, it["object"][source], source))
        seqs.append(_continuation(model, prompt, it["object"][target], source))
    conds = {"baseline": []}
    conds["intervention"] = [iv]
    if civ is not None:
        conds["control"] = [civ]
    logps = {c: _sequence_logprobs(model, seqs, ivs, pos if ivs else "all", batch_size, f"lss {c}", progress)
             for c, ivs in conds.items()}
    rows = []
    for j, it in enumerate(usable):
        base_delta = logps["baseline"][2 * j + 1] - logps["baseline"][2 * j]
        for c in conds:
            ls, lt = logps[c][2 * j], logps[c][2 * j + 1]
            rows.append({"item": it.get("id", str(j)), "relation": it.get("relation"), "source": source,
                         "target": target, "condition": c, "mode": mode, "factor": float(factor),
                         "object_source": it["object"][source], "object_target": it["object"][target],
                         "logp_source": ls, "logp_target": lt, "delta": lt - ls, "delta_baseline": base_delta,
                         "shifted": bool(lt - ls > base_delta)})
    return pd.DataFrame(rows)


def lss_summary(df: pd.DataFrame) -> pd.DataFrame:
    """LSS per source × target (× mode, factor) and condition: the fraction of shifted items, with a
    Wilson 95% interval, and the mean change of Δ."""
    missing = {"source", "target", "condition", "shifted", "delta", "delta_baseline"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not an LSS frame: it lacks the column(s) {choices(sorted(missing))}")
    keys = [k for k in ("source", "target", "mode", "factor", "condition") if k in df.columns]
    out = []
    for key, g in df[df["condition"] != "baseline"].groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        k, n = int(g["shifted"].sum()), len(g)
        lo, hi = wilson(k, n)
        row.update(lss=k / n, low=lo, high=hi, n_items=n, mean_delta_shift=float((g["delta"] - g["delta_baseline"]).mean()))
        out.append(row)
    return pd.DataFrame(out)
