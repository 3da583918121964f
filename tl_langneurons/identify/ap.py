"""Expert units by average precision (Kojima et al. 2024, NAACL); methods page:
[expert units by average precision](methods.md#ap-experts).

Each unit's activations (its per-sentence means) score the sentences of one language (positives)
against those of the others (negatives); the units of highest AP are experts that fire for the
language, those of lowest AP experts that fire against it. The sort runs in NumPy (see
:mod:`.lape` for why).
"""

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import _checks
from ..errors import LangNeuronsError
from ..neurons import LanguageNeurons
from ..stats import NeuronStats

# One unit chunk of average precision holds about this many scores (16 MB of float32): memory stays
# bounded whatever the number of units, and the chunk's temporaries are small enough for malloc to
# recycle instead of mapping (and page-faulting) fresh memory for every chunk.
AP_CHUNK_ELEMENTS = 1 << 22

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
        _checks.integer("chunk_units", chunk_units, 1)
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
    _checks.integer("n_positive", n_positive, 1)
    _checks.integer("n_negative", n_negative, 1)
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
    n = _checks.integer("n", n, 2, L * I, even=True)
    _checks.integer("n_positive", n_positive, 1)
    _checks.integer("n_negative", n_negative, 1)
    _checks.integer("seed", seed, 0)
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
    return LanguageNeurons(neurons, "ap_experts", params, stats.site, stats.model, L, I)


# -- non-contrastive baselines ---------------------------------------------------------------
