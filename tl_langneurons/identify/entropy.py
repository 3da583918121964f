"""LAPE: language activation probability entropy (Tang et al. 2024, ACL); methods page:
[LAPE](methods.md#lape).

The heavy loops run in NumPy on CPU rather than torch: ``np.partition`` and ``np.sort`` use SIMD
(AVX-512/AVX2) selection and sorting, 10–25× faster than ``torch.kthvalue``/``torch.sort`` on CPU
(measured: 0.13 s vs 2.7 s for the k-th of 48M float64; 0.14 s vs 3.5 s to sort 20,000 rows of
3,000 float32), and NumPy runs single-threaded, which behaves predictably on a machine shared with
other jobs. Inputs and outputs stay torch tensors; the arrays are zero-copy views where possible.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import _checks
from ..errors import LangNeuronsError
from ..neurons import LanguageNeurons
from ..stats import NeuronStats

# 0·log 0 = 0 without a branch: q·log(max(q, TINY)) is exactly q·log q for every normal q > 0 and
# 0 for q = 0. (Subnormal q would be off by < 1e-305.)
_TINY = np.finfo(np.float64).tiny


def smallest_indices(h: np.ndarray, n_keep: int) -> np.ndarray:
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
    filter_rate = _checks.rate("filter_rate", filter_rate)
    activation_bar_ratio = _checks.rate("activation_bar_ratio", activation_bar_ratio)
    _checks.boolean("normalize_entropy", normalize_entropy)
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
    top_rate = _checks.rate("top_rate", top_rate)
    filter_rate = _checks.rate("filter_rate", filter_rate)
    activation_bar_ratio = _checks.rate("activation_bar_ratio", activation_bar_ratio)
    _checks.boolean("normalize_entropy", normalize_entropy)
    _checks.boolean("per_layer", per_layer)
    K, L, I = stats.count_pos.shape
    rows = _Rows(stats)
    H, eligible, tau, bar = _lape_core(rows, filter_rate, activation_bar_ratio, normalize_entropy)
    H[~eligible] = np.inf
    if per_layer:
        n_keep = round(top_rate * I)
        kept = np.concatenate([smallest_indices(H[l], n_keep) + l * I for l in range(L)])
    else:
        kept = smallest_indices(H.reshape(-1), round(top_rate * L * I))
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
    return LanguageNeurons(neurons, "lape", params, stats.site, stats.model, L, I)


# -- average precision ---------------------------------------------------------------------
