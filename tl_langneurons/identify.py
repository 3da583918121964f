"""Identify language-specific neurons from recorded statistics: pure tensor functions, no model.

* :func:`lape` — language activation probability entropy (Tang et al. 2024, ACL);
* :func:`ap_experts` — expert units by average precision (Kojima et al. 2024, NAACL);
* :func:`threshold` — non-contrastive activation-probability baselines (Mondal et al. 2025,
  Rahmanisa et al. 2025);
* :func:`random_like` — random controls with the same per-layer counts.

The heavy loops run in NumPy on CPU rather than torch: ``np.partition`` and ``np.sort`` use SIMD
(AVX-512/AVX2) selection and sorting, 10–25× faster than ``torch.kthvalue``/``torch.sort`` on CPU
(measured: 0.13 s vs 2.7 s for the k-th of 48M float64; 0.14 s vs 3.5 s to sort 20,000 rows of
3,000 float32), and NumPy runs single-threaded, which behaves predictably on a machine shared with
other jobs. Inputs and outputs stay torch tensors; the arrays are zero-copy views where possible.
"""

import math
import numbers
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .errors import LangNeuronsError
from .neurons import LanguageNeurons
from .stats import NeuronStats

# One unit chunk of average precision holds about this many scores (16 MB of float32): memory stays
# bounded whatever the number of units, and the chunk's temporaries are small enough for malloc to
# recycle instead of mapping (and page-faulting) fresh memory for every chunk.
AP_CHUNK_ELEMENTS = 1 << 22

# 0·log 0 = 0 without a branch: q·log(max(q, TINY)) is exactly q·log q for every normal q > 0 and
# 0 for q = 0. (Subnormal q would be off by < 1e-305.)
_TINY = np.finfo(np.float64).tiny


# -- argument checks -----------------------------------------------------------------------


def _check_rate(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 < float(v) <= 1.0:
        raise LangNeuronsError(f"{name} must be a number in (0, 1], got {v!r}")
    return float(v)


def _check_int(name: str, v, lo: int, hi: int | None = None, even: bool = False) -> int:
    if (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (hi is not None and v > hi)
            or (even and v % 2)):
        span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise LangNeuronsError(f"{name} must be {'an even' if even else 'an'} integer {span}, got {v!r}")
    return int(v)


def _check_bool(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise LangNeuronsError(f"{name} must be True or False, got {v!r}")
    return v


def _model(stats: NeuronStats) -> dict:
    return dict(stats.meta.get("model") or {})


def _smallest(h: np.ndarray, n_keep: int) -> np.ndarray:
    """Sorted flat indices of the ``n_keep`` smallest values of ``h``, ties to the lower index.

    Equal to the first ``n_keep`` entries of a stable ascending sort, but O(n): one partition
    finds the cut value, then everything below it and the lowest-indexed ties at it are taken.
    ``+inf`` marks ineligible entries, which are never taken, so fewer may come back.
    """
    if n_keep <= 0 or h.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_keep = min(n_keep, h.size)
    cut = np.partition(h, n_keep - 1)[n_keep - 1]
    if cut == np.inf:
        return np.flatnonzero(h < np.inf)
    below = np.flatnonzero(h < cut)
    at = np.flatnonzero(h == cut)[: n_keep - below.size]
    return np.union1d(below, at)


# -- LAPE ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LapeEntropy:
    """The quantities LAPE ranks by: per-neuron entropy, eligibility and the two thresholds.

    ``entropy`` is finite everywhere (ineligible neurons included, for plotting); LAPE ranks
    :attr:`ranked` instead, where ineligible neurons are ``+inf``.
    """

    entropy: Float[Tensor, "layer d_mlp"]
    eligible: Bool[Tensor, "layer d_mlp"]
    tau: float
    activation_bar: float
    normalized: bool

    @property
    def ranked(self) -> Float[Tensor, "layer d_mlp"]:
        return torch.where(self.eligible, self.entropy, torch.full_like(self.entropy, math.inf))


class _Rows:
    """``p[k]`` one language at a time, ``[layer, d_mlp]`` float64, from counts or from ``p`` itself.

    LAPE passes over the languages twice instead of materialising ``p``: for a 70B-class model
    ``p`` is 21 × 80 × 28672 float64 = 385 MB, and a fresh allocation that size costs more
    (page faults) than the whole computation on a warm machine.
    """

    def __init__(self, stats: NeuronStats | Tensor):
        if isinstance(stats, NeuronStats):
            self.counts = stats.count_pos.detach().cpu().double().numpy()
            n = stats.n_tokens.detach().cpu().double().numpy()
            if (n <= 0).any():
                empty = [k for k, v in zip(stats.languages, n.tolist()) if v <= 0]
                raise LangNeuronsError(f"no tokens recorded for language(s) {empty}")
            self.n = n
            self.shape = self.counts.shape
            self.buf = np.empty(self.shape[1:])
        else:
            self.counts, self.p = None, stats.detach().cpu().double().numpy()
            self.shape = self.p.shape

    def __call__(self, k: int) -> np.ndarray:
        if self.counts is None:
            return self.p[k]
        # the same correctly rounded division as NeuronStats.activation_probability
        return np.divide(self.counts[k], self.n[k], out=self.buf)


# LAPE's thresholds are found from a systematic sample of this many p values: the sample brackets
# the k-th smallest value, and a second pass keeps only the values in the bracket (see _kth_bands).
_LAPE_SAMPLE = 1 << 20


def _bracket(sample: np.ndarray, k: int, M: int) -> tuple[float, float]:
    """Values ``a ≤ b`` that very likely enclose the k-th smallest of all M values, from a sorted sample.

    The margin is 6 binomial standard deviations of the sample quantile; a miss is detected and
    only costs a slower exact pass, never a wrong answer.
    """
    m = sample.size
    f = k / M
    d = 6 * math.sqrt(f * (1 - f) / m) + 2 / m
    ia, ib = math.floor((f - d) * m) - 1, math.ceil((f + d) * m)
    return (float(sample[ia]) if ia >= 0 else -math.inf), (float(sample[ib]) if ib < m else math.inf)


def _lape_core(rows: _Rows, filter_rate: float, activation_bar_ratio: float, normalize_entropy: bool
               ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Entropy ``[L, I]``, eligibility ``[L, I]``, τ and the activation bar, in two passes over languages.

    Pass 1: ``Σ_k p``, ``max_k p`` and a sample of ``p``. Pass 2: the entropy, and for each
    threshold the count of values below its bracket and the values inside it, whose partition
    gives the exact k-th smallest value (as ``torch.kthvalue`` on all of ``p``).
    """
    K, L, I = rows.shape
    if K < 2:
        raise LangNeuronsError(f"LAPE needs statistics of at least 2 languages, got {K}")
    M = K * L * I
    ks = [min(max(round(r * M), 1), M) for r in (filter_rate, activation_bar_ratio)]
    step = max(1, -(-M // _LAPE_SAMPLE))

    # Σ_k p summed in language order, one row at a time (the order a naive loop uses)
    s = np.zeros((L, I))
    max_p = np.full((L, I), -np.inf)
    lo, samples = math.inf, []
    for k in range(K):
        pk = rows(k)
        s += pk
        np.maximum(max_p, pk, out=max_p)
        lo = min(lo, float(pk.min()))
        samples.append(pk.reshape(-1)[(-k * L * I) % step:: step].copy())  # every step-th of flat p
    hi = float(max_p.max())
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise LangNeuronsError(f"activation probabilities must lie in [0, 1], got values in [{lo}, {hi}]")
    sample = np.sort(np.concatenate(samples))
    if step == 1:  # the sample is everything: exact already
        found = {k: float(sample[k - 1]) for k in ks}
        brackets = {}
    else:
        found = {}
        brackets = {k: _bracket(sample, k, M) for k in ks}
    below = dict.fromkeys(brackets, 0)
    inside: dict[int, list[np.ndarray]] = {k: [] for k in brackets}

    # where no language fires, every p is 0 and dividing by 1 gives p̃ = 0 as the spec asks
    s[s == 0] = 1.0
    H = np.zeros((L, I))
    q = np.empty((L, I))
    t = np.empty((L, I))
    for k in range(K):  # per-language rows keep the temporaries at L·I, not K·L·I
        pk = rows(k)
        np.divide(pk, s, out=q)
        np.maximum(q, _TINY, out=t)
        np.log(t, out=t)
        t *= q
        H -= t
        for kk, (a, b) in brackets.items():
            ge_a = pk >= a
            below[kk] += pk.size - int(np.count_nonzero(ge_a))
            ge_a &= pk <= b
            inside[kk].append(pk[ge_a])
    if normalize_entropy:
        H /= math.log(K)

    for kk in brackets:
        vals = np.concatenate(inside[kk])
        r = kk - below[kk]
        if 1 <= r <= vals.size:
            found[kk] = float(np.partition(vals, r - 1)[r - 1])
        else:  # the sample missed (adversarially ordered data): select over everything
            every = np.empty((K, L, I))
            for k in range(K):
                every[k] = rows(k)  # rows() reuses one buffer: copy each row out
            found[kk] = float(np.partition(every.reshape(-1), kk - 1)[kk - 1])
    tau, bar = found[ks[0]], found[ks[1]]
    return H, max_p > tau, tau, bar


def lape_entropy(stats: NeuronStats | Float[Tensor, "lang layer d_mlp"], filter_rate: float = 0.95,
                 activation_bar_ratio: float = 0.95, normalize_entropy: bool = False) -> LapeEntropy:
    """LAPE's per-neuron entropy and thresholds (Tang et al. 2024, ACL), e.g. for plots.

    ``stats`` is a :class:`NeuronStats` or an activation-probability tensor ``p [lang, layer, d_mlp]``.
    See :func:`lape` for the definitions.
    """
    filter_rate = _check_rate("filter_rate", filter_rate)
    activation_bar_ratio = _check_rate("activation_bar_ratio", activation_bar_ratio)
    _check_bool("normalize_entropy", normalize_entropy)
    if not isinstance(stats, NeuronStats) and not (isinstance(stats, Tensor) and stats.ndim == 3):
        raise LangNeuronsError(f"expected NeuronStats or a [lang, layer, d_mlp] tensor, got {type(stats).__name__}")
    H, eligible, tau, bar = _lape_core(_Rows(stats), filter_rate, activation_bar_ratio, normalize_entropy)
    return LapeEntropy(torch.from_numpy(H), torch.from_numpy(eligible), tau, bar, normalize_entropy)


def lape(stats: NeuronStats, top_rate: float = 0.01, filter_rate: float = 0.95, activation_bar_ratio: float = 0.95,
         normalize_entropy: bool = False, per_layer: bool = False) -> LanguageNeurons:
    """Language activation probability entropy (Tang et al. 2024, "Language-Specific Neurons: The
    Key to Multilingual Capabilities in Large Language Models", ACL), as in their code.

    * ``p[k, l, j]`` = fraction of language k's tokens on which neuron (l, j) is > 0;
      ``p̃ = p / Σ_k p`` (0 where the sum is 0); ``H = −Σ_k p̃ log p̃`` (natural log, 0·log 0 = 0),
      divided by log K if ``normalize_entropy``.
    * ``τ`` = the ``round(filter_rate·M)``-th smallest of all ``M = K·L·I`` values of ``p``
      (1-based, like ``torch.kthvalue``); a neuron is eligible iff ``max_k p > τ``.
    * Keep the ``round(top_rate·L·I)`` eligible neurons of smallest ``H`` over the whole model (or
      ``round(top_rate·I)`` per layer with ``per_layer``), ties to the lower flat index ``l·I + j``;
      ineligible neurons are never kept, so fewer may be kept. (Tang's ``topk`` could fill the
      quota with them, but with ``activation_bar = τ`` they join no language, so the sets agree.)
    * ``activation_bar`` = the ``round(activation_bar_ratio·M)``-th smallest ``p`` (= τ when the
      ratios are equal); each kept neuron belongs to every language with ``p > activation_bar``,
      possibly several, possibly none.

    ``params`` of the result records the arguments plus ``tau``, ``activation_bar`` and ``n_kept``.
    """
    top_rate = _check_rate("top_rate", top_rate)
    filter_rate = _check_rate("filter_rate", filter_rate)
    activation_bar_ratio = _check_rate("activation_bar_ratio", activation_bar_ratio)
    _check_bool("normalize_entropy", normalize_entropy)
    _check_bool("per_layer", per_layer)
    K, L, I = stats.count_pos.shape
    rows = _Rows(stats)
    H, eligible, tau, bar = _lape_core(rows, filter_rate, activation_bar_ratio, normalize_entropy)
    H[~eligible] = np.inf
    if per_layer:
        n_keep = round(top_rate * I)
        kept = np.concatenate([_smallest(H[l], n_keep) + l * I for l in range(L)])
    else:
        kept = _smallest(H.reshape(-1), round(top_rate * L * I))
    layer, index = kept // I, kept % I
    # p of the kept neurons only, with the same division (the full p is never materialised)
    above = (rows.counts[:, layer, index] / rows.n[:, None]) > bar  # [K, n_kept]
    neurons = {}
    for k, lang in enumerate(stats.languages):
        sel = above[k]
        neurons[lang] = list(zip(layer[sel].tolist(), index[sel].tolist()))
    params = {"top_rate": top_rate, "filter_rate": filter_rate, "activation_bar_ratio": activation_bar_ratio,
              "normalize_entropy": normalize_entropy, "per_layer": per_layer, "tau": tau, "activation_bar": bar,
              "n_kept": int(kept.size)}
    return LanguageNeurons(neurons, "lape", params, stats.site, _model(stats), L, I)


# -- average precision ---------------------------------------------------------------------


def _ap_sorted_split(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AP of each row from its positive ``[C, P]`` and negative ``[C, N]`` scores; sorts them in place.

    sklearn's AP is ``Σ_n (R_n − R_{n−1}) P_n`` over distinct thresholds. Recall steps only at
    thresholds equal to some positive's score, by 1/P per positive there, so
    ``AP = (1/P) Σ_{positive i} precision(score ≥ s_i)``, and that precision needs only two counts:
    positives ≥ s_i and negatives ≥ s_i. Ties need no special case: every score equal to s_i
    counts, as at sklearn's threshold s_i.
    """
    C, P = pos.shape
    N = neg.shape[1]
    pos.sort(axis=1)
    # positives ≥ s_i = P − (index of the first positive equal to s_i in the sorted row)
    first = np.zeros((C, P), dtype=np.int64)
    if P > 1:
        new = pos[:, 1:] != pos[:, :-1]
        first[:, 1:] = np.where(new, np.arange(1, P), 0)
        np.maximum.accumulate(first, axis=1, out=first)
    pos_ge = P - first
    if N:
        neg.sort(axis=1)
        # negatives < s_i by binary search, one row at a time: NumPy's searchsorted is not
        # batched, but a row (a few KB) stays in cache and sorted keys narrow each search; this
        # is 2–3× faster than the batched torch.searchsorted
        neg_lt = np.empty((C, P), dtype=np.int64)
        ss = np.searchsorted
        for u in range(C):
            neg_lt[u] = ss(neg[u], pos[u])
        denom = pos_ge + (N - neg_lt)
    else:
        denom = pos_ge
    return (pos_ge / denom).sum(axis=1) / P


def _ap_array(x: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray, sample_axis: int,
              chunk_units: int | None = None) -> np.ndarray:
    """AP of every unit of ``x`` (``[unit, sample]`` if ``sample_axis == 1``, else ``[sample, unit]``)."""
    U = x.shape[1 - sample_axis]
    P, N = len(pos_idx), len(neg_idx)
    C = max(1, min(U, chunk_units or AP_CHUNK_ELEMENTS // max(P + N, 1)))
    # buffers reused across chunks: a fresh allocation would page-fault again on every chunk
    pos_buf = np.empty((C, P), dtype=x.dtype)
    neg_buf = np.empty((C, N), dtype=x.dtype)
    if sample_axis == 0:
        pos_tmp = np.empty(P * C, dtype=x.dtype)
        neg_tmp = np.empty(N * C, dtype=x.dtype)
    out = np.empty(U, dtype=np.float64)
    for c0 in range(0, U, C):
        c1 = min(U, c0 + C)
        m = c1 - c0
        pb, nb = pos_buf[:m], neg_buf[:m]
        # mode="clip": the indices are valid by construction, and the default mode="raise"
        # would copy through a temporary instead of writing into `out`
        if sample_axis == 1:
            np.take(x[c0:c1], pos_idx, axis=1, out=pb, mode="clip")
            np.take(x[c0:c1], neg_idx, axis=1, out=nb, mode="clip")
        else:
            pt, nt = pos_tmp[: P * m].reshape(P, m), neg_tmp[: N * m].reshape(N, m)
            np.take(x[:, c0:c1], pos_idx, axis=0, out=pt, mode="clip")
            np.take(x[:, c0:c1], neg_idx, axis=0, out=nt, mode="clip")
            pb[...] = pt.T
            nb[...] = nt.T
        if np.isnan(pb).any() or np.isnan(nb).any():
            raise LangNeuronsError(f"scores of units {c0}..{c1 - 1} contain NaN; average precision needs numbers")
        out[c0:c1] = _ap_sorted_split(pb, nb)
    return out


def _numpy_scores(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype not in (torch.float32, torch.float64):
        # float16/bfloat16 → float32 is exact, so order and ties are unchanged
        t = t.float() if t.is_floating_point() else t.double()
    return t.numpy()


def average_precision(scores: Float[Tensor, "unit sample"], labels: Bool[Tensor, " sample"], *,
                      chunk_units: int | None = None) -> Float[Tensor, " unit"]:
    """Every unit's average precision at once, as ``sklearn.metrics.average_precision_score``.

    Uninterpolated AP with sklearn's handling of ties (one threshold per distinct score,
    ``AP = Σ_n (R_n − R_{n−1}) P_n``), for the binary labels ``labels`` (True = positive). Kojima et
    al. (2024, NAACL) called sklearn once per unit; this sorts each unit's positive and negative
    scores once and counts with binary searches, chunked over units (``chunk_units`` at a time) to
    bound memory. A transposed (sample-major) ``scores`` view is read without copying it whole.
    Returns float64.
    """
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[1] != labels.shape[0]:
        raise LangNeuronsError(f"scores must be [unit, sample] and labels [sample]; got {tuple(scores.shape)} "
                               f"and {tuple(labels.shape)}")
    if labels.dtype != torch.bool:
        raise LangNeuronsError(f"labels must be a bool tensor, got dtype {labels.dtype}")
    if chunk_units is not None:
        _check_int("chunk_units", chunk_units, 1)
    lab = labels.detach().cpu().numpy()
    pos_idx, neg_idx = np.flatnonzero(lab), np.flatnonzero(~lab)
    if pos_idx.size == 0:
        raise LangNeuronsError("labels hold no positive sample; average precision is undefined")
    if scores.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    x = _numpy_scores(scores)
    if x.strides[0] < x.strides[1]:  # a transposed view: walk it sample-major
        ap = _ap_array(x.T, pos_idx, neg_idx, sample_axis=0, chunk_units=chunk_units)
    else:
        ap = _ap_array(x, pos_idx, neg_idx, sample_axis=1, chunk_units=chunk_units)
    return torch.from_numpy(ap)


def _sentence_split(stats: NeuronStats, language: str, n_positive: int, n_negative: int
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Kojima's sentence sets: the first ``n_positive`` sentences of ``language``, and
    ``n_negative`` split evenly over the other languages (the first ones of each; the remainder
    of the division goes one each to the first other languages)."""
    if stats.sentence_means is None:
        raise LangNeuronsError("average precision needs per-sentence means; record with sentence_means=True")
    k = stats.index(language)
    K = len(stats.languages)
    if K < 2:
        raise LangNeuronsError(f"average precision needs sentences of at least 2 languages, got {stats.languages}")
    sl = stats.sentence_language.detach().cpu().numpy()
    pos = np.flatnonzero(sl == k)[:n_positive]
    if pos.size == 0:
        raise LangNeuronsError(f"no sentences recorded for language {language!r}")
    others = [o for o in range(K) if o != k]
    base, extra = divmod(n_negative, len(others))
    negs, used = [], {language: int(pos.size)}
    for i, o in enumerate(others):
        take = np.flatnonzero(sl == o)[: base + (i < extra)]
        negs.append(take)
        used[stats.languages[o]] = int(take.size)
    neg = np.sort(np.concatenate(negs))
    if neg.size == 0:
        raise LangNeuronsError(f"no sentences of languages other than {language!r}; average precision needs negatives")
    return pos, neg, used


def ap_scores(stats: NeuronStats, language: str, n_positive: int = 500, n_negative: int = 2500
              ) -> Float[Tensor, "layer d_mlp"]:
    """Each unit's average precision for "the sentence is in ``language``" (Kojima et al. 2024, NAACL).

    A unit's response to a sentence is its mean activation over the sentence's tokens
    (``stats.sentence_means``); sentences as in :func:`ap_experts`. Chance level is the positive rate.
    """
    _check_int("n_positive", n_positive, 1)
    _check_int("n_negative", n_negative, 1)
    pos, neg, _ = _sentence_split(stats, language, n_positive, n_negative)
    return _ap_for(stats, pos, neg)


def _ap_for(stats: NeuronStats, pos: np.ndarray, neg: np.ndarray) -> Tensor:
    S, L, I = stats.sentence_means.shape
    x = _numpy_scores(stats.sentence_means).reshape(S, L * I)  # a view: [sentence, unit]
    return torch.from_numpy(_ap_array(x, pos, neg, sample_axis=0)).reshape(L, I)


def ap_experts(stats: NeuronStats, language: str, n: int = 2000, n_positive: int = 500, n_negative: int = 2500,
               seed: int = 0) -> LanguageNeurons:
    """Expert units of ``language`` by average precision (Kojima et al. 2024, "On the
    Multilingual Ability of Decoder-based Pre-trained Language Models: Finding and Controlling
    Language-Specific Neurons", NAACL).

    Positives: the first ``n_positive`` sentences of ``language``; negatives: ``n_negative`` split
    evenly over the other languages, the first sentences of each (fewer where fewer exist). Each
    unit (layer, neuron) is scored by the AP of its per-sentence mean activations; over the whole
    model the top ``n/2`` units by AP (fire more for the language) and the bottom ``n/2`` (fire
    less) are taken; ties go to the lower flat index in the descending ranking, so the two halves
    never overlap.

    The sentence selection is deterministic; ``seed`` is recorded in ``params`` but draws nothing.
    """
    return ap_experts_all(stats, [language], n=n, n_positive=n_positive, n_negative=n_negative, seed=seed)


def ap_experts_all(stats: NeuronStats, languages: list[str] | None = None, n: int = 2000, n_positive: int = 500,
                   n_negative: int = 2500, seed: int = 0) -> LanguageNeurons:
    """:func:`ap_experts` for several languages (all by default), as one neuron set."""
    L, I = stats.n_layers, stats.d_mlp
    n = _check_int("n", n, 2, L * I, even=True)
    _check_int("n_positive", n_positive, 1)
    _check_int("n_negative", n_negative, 1)
    _check_int("seed", seed, 0)
    languages = list(stats.languages) if languages is None else list(languages)
    if not languages:
        raise LangNeuronsError(f"no languages given; available: {stats.languages}")
    neurons, used = {}, {}
    for lang in languages:
        pos, neg, used[lang] = _sentence_split(stats, lang, n_positive, n_negative)
        ap = _ap_for(stats, pos, neg).reshape(-1).numpy()
        order = np.argsort(-ap, kind="stable")
        flat = np.concatenate([order[: n // 2], order[len(order) - n // 2:]])
        neurons[lang] = list(zip((flat // I).tolist(), (flat % I).tolist()))
    params = {"n": n, "n_positive": n_positive, "n_negative": n_negative, "seed": seed, "sentences_used": used}
    return LanguageNeurons(neurons, "ap_experts", params, stats.site, _model(stats), L, I)


# -- non-contrastive baselines ---------------------------------------------------------------


def threshold(stats: NeuronStats, top_m: int | None = None, min_probability: float | None = None,
              all_sentences: bool = False) -> LanguageNeurons:
    """Per-language neurons by activation alone, with no contrast between languages.

    Give exactly one of:

    * ``top_m``: each language's ``top_m`` neurons of highest activation probability ``p``
      (Mondal et al. 2025), ties to the lower flat index;
    * ``min_probability``: each language's neurons with ``p ≥ min_probability``;
    * ``all_sentences=True`` (Rahmanisa et al. 2025, "active in every sentence"): neurons whose
      **mean activation over the sentence's tokens is > 0 in every recorded sentence** of the
      language. This reads ``stats.sentence_means``; it is Rahmanisa's criterion applied to the
      per-sentence mean activation, not to per-token firing (a neuron can have a positive mean
      in a sentence without firing on every token, and vice versa for negative-going sites).
    """
    given = [name for name, v in (("top_m", top_m), ("min_probability", min_probability)) if v is not None]
    if _check_bool("all_sentences", all_sentences):
        given.append("all_sentences")
    if len(given) != 1:
        raise LangNeuronsError(f"give exactly one of top_m, min_probability, all_sentences=True; got {given or 'none'}")
    K, L, I = stats.count_pos.shape
    neurons: dict[str, list[tuple[int, int]]] = {}
    if all_sentences:
        if stats.sentence_means is None:
            raise LangNeuronsError("all_sentences=True needs per-sentence means; record with sentence_means=True")
        for k, lang in enumerate(stats.languages):
            rows = stats.sentence_means[stats.sentence_language == k]
            if rows.shape[0] == 0:
                raise LangNeuronsError(f"no sentences recorded for language {lang!r}")
            layer, index = torch.nonzero(rows.amin(0) > 0, as_tuple=True)
            neurons[lang] = list(zip(layer.tolist(), index.tolist()))
        params = {"all_sentences": True}
    else:
        p = stats.activation_probability().detach().cpu().double().numpy()
        if top_m is not None:
            top_m = _check_int("top_m", top_m, 1, L * I)
            flats = [_smallest(-p[k].reshape(-1), top_m) for k in range(K)]
            params = {"top_m": top_m}
        else:
            min_probability = _check_rate("min_probability", min_probability)
            flats = [np.flatnonzero(p[k].reshape(-1) >= min_probability) for k in range(K)]
            params = {"min_probability": min_probability}
        for lang, flat in zip(stats.languages, flats):
            neurons[lang] = list(zip((flat // I).tolist(), (flat % I).tolist()))
    return LanguageNeurons(neurons, "threshold", params, stats.site, _model(stats), L, I)


def random_like(neurons: LanguageNeurons, seed: int = 0) -> LanguageNeurons:
    """A random control: per language, as many neurons in each layer as ``neurons`` has there,
    drawn uniformly without replacement within the layer.

    Each language draws from its own generator seeded by ``(seed, language)``, so a language's
    control does not depend on which other languages are in the set.
    """
    seed = _check_int("seed", seed, 0)
    out = {}
    for lang in neurons.languages:
        rng = np.random.default_rng([seed, zlib.crc32(lang.encode("utf-8"))])
        pairs = []
        for layer, indices in sorted(neurons.by_layer(lang).items()):
            pick = rng.choice(neurons.d_mlp, size=len(indices), replace=False)
            pairs.extend((layer, j) for j in pick.tolist())
        out[lang] = pairs
    params = {"seed": seed, "source_method": neurons.method, "source_params": neurons.params}
    return LanguageNeurons(out, "random_like", params, neurons.site, neurons.model, neurons.n_layers, neurons.d_mlp)


# -- benchmark -------------------------------------------------------------------------------


def bench_identify(lape_shape: tuple[int, int, int] = (21, 80, 28672), ap_shape: tuple[int, int] = (200_000, 3000),
                   sklearn_units: int = 200, seed: int = 0) -> dict:
    """Time :func:`lape` and :func:`average_precision` on synthetic data of the given sizes.

    ``lape_shape = (K, L, I)``; ``ap_shape = (units, samples)`` with one sample in six positive
    (Kojima's 500 of 3,000). scikit-learn, a test/benchmark dependency only, is timed on the first
    ``sklearn_units`` units: ``ap_speedup`` is sklearn's per-unit time extrapolated to all units over
    ``ap_s``; ``ap_speedup_subset`` compares the two on that subset alone (where our fixed costs
    weigh more). ``ap_max_abs_diff`` is the largest difference from sklearn on the subset.
    """
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(seed)
    out: dict = {"lape_shape": list(lape_shape), "ap_shape": list(ap_shape)}

    K, L, I = lape_shape
    n_tokens = torch.randint(10_000, 200_000, (K,), generator=g).double()
    # cubed uniforms: most neurons rarely fire, a few often, like real statistics
    count_pos = torch.floor(torch.rand(K, L, I, generator=g, dtype=torch.float64).pow_(3) * n_tokens[:, None, None])
    # sum and sum_sq are not read by LAPE; aliasing count_pos saves 2·8·K·L·I bytes
    stats = NeuronStats([f"l{k}" for k in range(K)], "act", n_tokens, count_pos, count_pos, count_pos)
    t = time.perf_counter()
    res = lape(stats)
    out["lape_s"] = time.perf_counter() - t
    out["lape_n_kept"] = res.params["n_kept"]
    del stats, count_pos, res

    U, S = ap_shape
    scores = torch.randn(U, S, generator=g)
    labels = torch.zeros(S, dtype=torch.bool)
    labels[torch.randperm(S, generator=g)[: max(1, S // 6)]] = True
    # a signal in some units, so APs spread over (0, 1) rather than sit at chance
    scores[: U // 2] += torch.rand(U // 2, 1, generator=g) * labels.float()
    t = time.perf_counter()
    ap = average_precision(scores, labels)
    out["ap_s"] = time.perf_counter() - t

    m = min(sklearn_units, U)
    sub, y = scores[:m].numpy(), labels.numpy()
    t = time.perf_counter()
    ref = np.array([average_precision_score(y, sub[u]) for u in range(m)])
    out["ap_sklearn_subset_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ours = average_precision(scores[:m], labels).numpy()
    out["ap_ours_subset_s"] = time.perf_counter() - t
    out["ap_sklearn_extrapolated_s"] = out["ap_sklearn_subset_s"] / m * U
    out["ap_speedup"] = out["ap_sklearn_extrapolated_s"] / out["ap_s"]
    out["ap_speedup_subset"] = out["ap_sklearn_subset_s"] / out["ap_ours_subset_s"]
    out["ap_max_abs_diff"] = float(max(np.abs(ours - ref).max(), np.abs(ap[:m].numpy() - ref).max()))
    return out
