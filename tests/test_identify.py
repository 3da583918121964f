"""Identification methods against hand-worked examples, naive re-implementations and scikit-learn."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from tl_langneurons.identify import (ap_experts, ap_experts_all, ap_scores, average_precision, lape,
                                     lape_entropy, random_like, threshold)
from tl_langneurons.neurons import LanguageNeurons

from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.stats import NeuronStats

MODEL = {"name": "tiny", "architecture": "gpt2", "n_layers": 2, "d_mlp": 5, "gated": False, "weights_hash": "abc"}


def make_stats(count_pos, n_tokens, languages=None, sentence_means=None, sentence_language=None, model=None):
    count_pos = torch.as_tensor(count_pos, dtype=torch.float64)
    K = count_pos.shape[0]
    languages = languages or [f"l{k}" for k in range(K)]
    zeros = torch.zeros_like(count_pos)
    return NeuronStats(languages, "act", torch.as_tensor(n_tokens, dtype=torch.float64), count_pos, zeros, zeros,
                       sentence_means=sentence_means, sentence_language=sentence_language,
                       meta={"model": dict(model if model is not None else MODEL)})


# -- LAPE: a hand-worked example -----------------------------------------------------------

# 3 languages, 2 layers × 5 neurons, 10 tokens per language, so p = count / 10.
# counts per neuron as (en, fr, zh):
HAND = {
    (0, 0): (9, 0, 0),  # en only                     H = 0
    (0, 1): (0, 0, 0),  # dead: H = 0 but never fires, so ineligible
    (0, 2): (5, 5, 5),  # uniform                     H = ln 3
    (0, 3): (1, 1, 1),  # uniform, max p = .1         ineligible at τ = .1 (needs max p > τ)
    (0, 4): (0, 8, 8),  # fr + zh                     H = ln 2
    (1, 0): (2, 0, 0),  # en only, rarely             H = 0
    (1, 1): (0, 0, 7),  # zh only                     H = 0
    (1, 2): (6, 2, 0),  # mostly en                   H = −(.75 ln .75 + .25 ln .25) = 0.5623
    (1, 3): (3, 3, 0),  # en + fr                     H = ln 2
    (1, 4): (4, 4, 4),  # uniform                     H = ln 3
}
# The 30 counts sorted: twelve 0s (positions 1–12), 1 ×3 (13–15), 2 ×2 (16–17), 3 ×2 (18–19),
# 4 ×3 (20–22), 5 ×3 (23–25), 6 (26), 7 (27), 8 ×2 (28–29), 9 (30).
#   filter_rate = 0.5: k = round(15.0) = 15 → τ = 0.1
#   activation_bar_ratio = 0.7: k = round(21.0) = 21 → bar = 0.4
# Eligible (max p > .1): all but (0,1) and (0,3).
# Ranking by (H, flat index): (0,0) 0 [flat 0], (1,0) 0 [5], (1,1) 0 [6], (1,2) .56 [7],
#   (0,4) ln2 [4], (1,3) ln2 [8], (0,2) ln3 [2], (1,4) ln3 [9]; then the two ineligible.


def hand_stats():
    counts = torch.zeros(3, 2, 5, dtype=torch.float64)
    for (l, j), c in HAND.items():
        counts[:, l, j] = torch.tensor(c, dtype=torch.float64)
    return make_stats(counts, [10, 10, 10], ["en", "fr", "zh"])


def test_lape_hand_worked():
    stats = hand_stats()
    # top_rate .4: keep round(4.0) = 4 → (0,0), (1,0), (1,1), (1,2).
    # bar .4: (0,0) en .9 → en; (1,0) en .2 → no language at all; (1,1) zh .7 → zh; (1,2) en .6 → en.
    res = lape(stats, top_rate=0.4, filter_rate=0.5, activation_bar_ratio=0.7)
    assert res.neurons == {"en": [(0, 0), (1, 2)], "fr": [], "zh": [(1, 1)]}
    assert res.params["tau"] == pytest.approx(0.1) and res.params["activation_bar"] == pytest.approx(0.4)
    assert res.params["n_kept"] == 4
    assert res.method == "lape" and res.site == "act" and res.model == MODEL
    assert (res.n_layers, res.d_mlp) == (2, 5)

    # bar = τ = .1 (equal ratios, as in Tang's code): (1,0) en .2 → en; (1,2) en .6, fr .2 → both.
    res = lape(stats, top_rate=0.4, filter_rate=0.5, activation_bar_ratio=0.5)
    assert res.neurons == {"en": [(0, 0), (1, 0), (1, 2)], "fr": [(1, 2)], "zh": [(1, 1)]}

    # ties: top_rate .2 keeps round(2.0) = 2 of the three H = 0 neurons, the lower flat indices 0 and 5
    res = lape(stats, top_rate=0.2, filter_rate=0.5, activation_bar_ratio=0.5)
    assert res.neurons == {"en": [(0, 0), (1, 0)], "fr": [], "zh": []}

    # top_rate 1 asks for 10 but only the 8 eligible are kept; the dead (0,1) never is.
    res = lape(stats, top_rate=1.0, filter_rate=0.5, activation_bar_ratio=0.5)
    assert res.params["n_kept"] == 8
    assert res.neurons == {
        "en": [(0, 0), (0, 2), (1, 0), (1, 2), (1, 3), (1, 4)],
        "fr": [(0, 2), (0, 4), (1, 2), (1, 3), (1, 4)],
        "zh": [(0, 2), (0, 4), (1, 1), (1, 4)],
    }

    # per layer: round(.4 · 5) = 2 per layer. Layer 0: (0,0) 0, (0,4) ln2. Layer 1: (1,0), (1,1) both 0.
    res = lape(stats, top_rate=0.4, filter_rate=0.5, activation_bar_ratio=0.5, per_layer=True)
    assert res.neurons == {"en": [(0, 0), (1, 0)], "fr": [(0, 4)], "zh": [(0, 4), (1, 1)]}


def test_lape_entropy_hand_worked():
    ent = lape_entropy(hand_stats(), filter_rate=0.5, activation_bar_ratio=0.7)
    assert ent.tau == pytest.approx(0.1) and ent.activation_bar == pytest.approx(0.4)
    expected = torch.tensor([[0, 0, math.log(3), math.log(3), math.log(2)],
                             [0, 0, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), math.log(2), math.log(3)]],
                            dtype=torch.float64)
    torch.testing.assert_close(ent.entropy, expected, rtol=0, atol=1e-12)
    assert ent.eligible.tolist() == [[True, False, True, False, True], [True] * 5]
    assert ent.ranked[0, 1] == math.inf and ent.ranked[0, 0] == 0
    # the same from p directly, and normalised by log K
    p = hand_stats().activation_probability()
    ent_n = lape_entropy(p, filter_rate=0.5, normalize_entropy=True)
    torch.testing.assert_close(ent_n.entropy, expected / math.log(3), rtol=0, atol=1e-12)


# -- LAPE: against a naive implementation ----------------------------------------------------


def naive_lape(stats, top_rate, filter_rate, bar_ratio, normalize=False, per_layer=False):
    """Tang et al.'s procedure written out with Python loops over neurons."""
    cp, n = stats.count_pos.numpy(), stats.n_tokens.numpy()
    K, L, I = cp.shape
    p = [[[float(cp[k, l, j]) / float(n[k]) for j in range(I)] for l in range(L)] for k in range(K)]
    flat = sorted(p[k][l][j] for k in range(K) for l in range(L) for j in range(I))
    M = len(flat)
    tau = flat[min(max(round(filter_rate * M), 1), M) - 1]
    bar = flat[min(max(round(bar_ratio * M), 1), M) - 1]
    ranked = []  # (H, flat index, layer, index) of eligible neurons
    for l in range(L):
        for j in range(I):
            ps = [p[k][l][j] for k in range(K)]
            if not max(ps) > tau:
                continue
            s = 0.0
            for v in ps:
                s += v
            total = 0.0
            for v in ps:
                if v > 0:
                    q = v / s
                    total += q * float(np.log(q))
            h = -total
            if normalize:
                h /= math.log(K)
            ranked.append((h, l * I + j, l, j))
    ranked.sort()
    if per_layer:
        kept = []
        for l in range(L):
            kept += [r for r in ranked if r[2] == l][: round(top_rate * I)]
    else:
        kept = ranked[: round(top_rate * L * I)]
    out = {}
    for k, lang in enumerate(stats.languages):
        out[lang] = sorted((l, j) for _, _, l, j in kept if p[k][l][j] > bar)
    return out


def random_tied_stats(seed, K=4, L=3, I=40, max_count=5):
    g = torch.Generator().manual_seed(seed)
    # few distinct small counts: many ties in p, in τ and in H; repeated columns tie exactly
    counts = torch.randint(0, max_count + 1, (K, L, I), generator=g).double()
    counts[:, :, I // 2: I // 2 + 10] = counts[:, :, :10]
    counts[:, :, -3:] = 0  # dead neurons
    return make_stats(counts, [max_count] * K)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_rate,filter_rate,bar_ratio,normalize,per_layer", [
    (0.01, 0.95, 0.95, False, False),
    (0.1, 0.8, 0.8, False, False),
    (0.2, 0.5, 0.9, True, False),
    (0.3, 0.6, 0.4, False, True),
    (1.0, 0.7, 0.7, False, False),
])
def test_lape_equals_naive(seed, top_rate, filter_rate, bar_ratio, normalize, per_layer):
    stats = random_tied_stats(seed)
    res = lape(stats, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=bar_ratio,
               normalize_entropy=normalize, per_layer=per_layer)
    assert res.neurons == naive_lape(stats, top_rate, filter_rate, bar_ratio, normalize, per_layer)


@pytest.mark.parametrize("bracket", [None, (2.0, 3.0), (-1.0, -0.5)])
def test_lape_thresholds_from_a_sample(monkeypatch, bracket):
    """Large inputs find τ from a sample's bracket; small samples, ties and misses stay exact."""
    import tl_langneurons.identify.entropy as lape_module

    monkeypatch.setattr(lape_module, "_LAPE_SAMPLE", 37)
    if bracket is not None:  # a bracket that misses, to exercise the exact fallback
        monkeypatch.setattr(lape_module, "_bracket", lambda sample, k, M: bracket)
    for seed in range(3):
        stats = random_tied_stats(seed, K=5, L=4, I=60, max_count=20)
        for fr, br in ((0.95, 0.95), (0.5, 0.9), (1.0, 0.01)):
            res = lape(stats, top_rate=0.1, filter_rate=fr, activation_bar_ratio=br)
            assert res.neurons == naive_lape(stats, 0.1, fr, br)
            p = np.sort(stats.activation_probability().numpy().ravel())
            M = p.size
            assert res.params["tau"] == p[min(max(round(fr * M), 1), M) - 1]
            assert res.params["activation_bar"] == p[min(max(round(br * M), 1), M) - 1]


def test_lape_default_keeps_one_percent():
    g = torch.Generator().manual_seed(3)
    n = torch.tensor([1000.0, 2000.0, 1500.0, 800.0])
    counts = torch.floor(torch.rand(4, 4, 500, generator=g, dtype=torch.float64) ** 3 * n[:, None, None])
    res = lape(make_stats(counts, n))
    assert res.params["n_kept"] == round(0.01 * 4 * 500)
    assert res.neurons == naive_lape(make_stats(counts, n), 0.01, 0.95, 0.95)


def test_entropy_bounds():
    for seed in range(3):
        stats = random_tied_stats(seed, K=5)
        H = lape_entropy(stats).entropy
        assert H.min() >= 0 and H.max() <= math.log(5) + 1e-12
        Hn = lape_entropy(stats, normalize_entropy=True).entropy
        assert Hn.min() >= 0 and Hn.max() <= 1 + 1e-12
    uniform = make_stats(torch.full((5, 1, 3), 2.0), [4] * 5)
    torch.testing.assert_close(lape_entropy(uniform).entropy, torch.full((1, 3), math.log(5), dtype=torch.float64))


def test_lape_bad_arguments():
    stats = hand_stats()
    # (wrong types, e.g. per_layer="yes", are caught by the type checker before these value checks)
    for kwargs in ({"top_rate": 0.0}, {"top_rate": 1.5}, {"filter_rate": -0.1}, {"activation_bar_ratio": 2.0}):
        with pytest.raises(LangNeuronsError, match=next(iter(kwargs))):
            lape(stats, **kwargs)
    with pytest.raises(LangNeuronsError, match="at least 2 languages"):
        lape(make_stats(torch.ones(1, 2, 5), [10]))
    with pytest.raises(LangNeuronsError, match=r"\[0, 1\]"):
        lape(make_stats(torch.full((2, 2, 5), 20.0), [10, 10]))  # count_pos > n_tokens
    with pytest.raises(LangNeuronsError, match=r"\[0, 1\]"):
        lape_entropy(torch.full((2, 2, 2), float("nan")))


# -- average precision ---------------------------------------------------------------------


def sklearn_ap(scores, labels):
    y = labels.numpy()
    return np.array([average_precision_score(y, scores[u].numpy()) for u in range(scores.shape[0])])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_average_precision_equals_sklearn(dtype):
    g = torch.Generator().manual_seed(0)
    for U, S, rate in ((40, 30, 0.3), (25, 301, 0.1), (10, 7, 0.5)):
        scores = torch.randn(U, S, generator=g, dtype=dtype)
        labels = torch.rand(S, generator=g) < rate
        labels[0] = True
        scores[: U // 3] += 1.5 * labels  # some informative units
        ref = sklearn_ap(scores, labels)
        np.testing.assert_allclose(average_precision(scores, labels).numpy(), ref, rtol=0, atol=1e-6)
        # chunk boundaries and a transposed (sample-major) view change nothing
        np.testing.assert_allclose(average_precision(scores, labels, chunk_units=3).numpy(), ref, rtol=0, atol=1e-6)
        st = scores.T.contiguous().T
        np.testing.assert_allclose(average_precision(st, labels, chunk_units=4).numpy(), ref, rtol=0, atol=1e-6)


def test_average_precision_ties():
    g = torch.Generator().manual_seed(1)
    U, S = 60, 80
    scores = torch.round(torch.randn(U, S, generator=g, dtype=torch.float64) * 10) / 10  # one decimal: many ties
    scores[:5] = torch.round(scores[:5])  # coarser still
    scores[5:10] = 0.25  # all-equal units: AP = positive rate
    scores[10] = torch.tensor([0.0, -0.0] * (S // 2), dtype=torch.float64)  # -0.0 == 0.0 is one threshold too
    labels = torch.rand(S, generator=g) < 0.25
    ours = average_precision(scores, labels).numpy()
    np.testing.assert_allclose(ours, sklearn_ap(scores, labels), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[5:10], labels.double().mean().item(), rtol=0, atol=1e-12)
    # float32 with ties, and rounded to coarse steps in half precision
    s32 = scores.float()
    np.testing.assert_allclose(average_precision(s32, labels).numpy(), sklearn_ap(s32, labels), atol=1e-6)
    s16 = scores.half()
    np.testing.assert_allclose(average_precision(s16, labels).numpy(), sklearn_ap(s16.float(), labels), atol=1e-6)


def test_average_precision_edge_labels():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(6, 20, generator=g)
    one = torch.zeros(20, dtype=torch.bool)
    one[7] = True
    np.testing.assert_allclose(average_precision(scores, one).numpy(), sklearn_ap(scores, one), atol=1e-6)
    allpos = torch.ones(20, dtype=torch.bool)
    np.testing.assert_allclose(average_precision(scores, allpos).numpy(), np.ones(6), atol=1e-12)
    with pytest.raises(LangNeuronsError, match="no positive"):
        average_precision(scores, torch.zeros(20, dtype=torch.bool))
    bad = scores.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(LangNeuronsError, match="NaN"):
        average_precision(bad, one)


# -- expert units by average precision -----------------------------------------------------


def planted_sentence_stats(n_per_lang=40, L=2, I=20, seed=0):
    """Three languages with interleaved sentences; for fr, unit (1,3) fires more, (0,7) less."""
    g = torch.Generator().manual_seed(seed)
    langs = ["en", "fr", "de"]
    S = 3 * n_per_lang
    sl = torch.arange(S) % 3  # en, fr, de, en, ...: "the first sentences" must follow this order
    sm = torch.randn(S, L, I, generator=g) * 0.1
    fr = sl == 1
    sm[fr, 1, 3] += 2.0
    sm[fr, 0, 7] -= 2.0
    counts = torch.full((3, L, I), 5.0)
    return make_stats(counts, [10, 10, 10], langs, sentence_means=sm, sentence_language=sl)


def test_ap_experts_finds_planted_units():
    stats = planted_sentence_stats()
    res = ap_experts(stats, "fr", n=2, n_positive=30, n_negative=40)
    assert res.neurons == {"fr": [(0, 7), (1, 3)]}
    assert res.method == "ap_experts" and res.params["n"] == 2
    assert res.params["sentences_used"] == {"fr": {"fr": 30, "en": 20, "de": 20}}
    ap = ap_scores(stats, "fr", n_positive=30, n_negative=40)
    assert ap.shape == (2, 20) and ap[1, 3] == 1.0 and ap.argmin() == 7
    # all languages at once; fewer sentences than asked for are taken as they are
    res = ap_experts_all(stats, n=4, n_positive=500, n_negative=2500)
    assert res.languages == ["en", "fr", "de"] and set(res.counts().values()) == {4}
    assert {(0, 7), (1, 3)} <= set(res.neurons["fr"])
    assert res.params["sentences_used"]["fr"] == {"fr": 40, "en": 40, "de": 40}


def test_ap_scores_uses_the_first_sentences_of_each_language():
    stats = planted_sentence_stats(n_per_lang=10, L=2, I=8, seed=1)
    # fr positives: its first 6 sentences; negatives: 7 split as 4 (en, first other) + 3 (de)
    ap = ap_scores(stats, "fr", n_positive=6, n_negative=7)
    sl = stats.sentence_language
    pos = torch.nonzero(sl == 1)[:6, 0]
    neg = torch.cat([torch.nonzero(sl == 0)[:4, 0], torch.nonzero(sl == 2)[:3, 0]])
    idx = torch.cat([pos, neg])
    x = stats.sentence_means[idx].reshape(len(idx), -1).T
    y = torch.cat([torch.ones(6), torch.zeros(7)]).bool()
    np.testing.assert_allclose(ap.reshape(-1).numpy(), sklearn_ap(x, y), atol=1e-6)


def test_ap_experts_bad_arguments():
    stats = planted_sentence_stats()
    for kwargs, name in (({"n": 3}, "n"), ({"n": 0}, "n"), ({"n": 42}, "n"), ({"n_positive": 0}, "n_positive"),
                         ({"n_negative": -1}, "n_negative")):
        with pytest.raises(LangNeuronsError, match=name):
            ap_experts(stats, "fr", **{"n": 2, **kwargs})
    with pytest.raises(LangNeuronsError, match="'xx'"):
        ap_experts(stats, "xx", n=2)
    no_sentences = make_stats(torch.ones(2, 2, 5), [10, 10])
    with pytest.raises(LangNeuronsError, match="sentence_means"):
        ap_experts(no_sentences, "l0", n=2)


# -- thresholds ----------------------------------------------------------------------------


def test_threshold_options():
    # p for en: [[.9, .5, .5, 0], [.5, .1, 0, 1]]; fr: [[0, .2, .2, .2], [.6, .6, 0, 0]]
    counts = torch.tensor([[[9, 5, 5, 0], [5, 1, 0, 10]], [[0, 2, 2, 2], [6, 6, 0, 0]]], dtype=torch.float64)
    langs = ["en", "fr"]
    sm = torch.tensor([
        [[1.0, 0.5, -1.0, 0.0], [0.1, 0.0, 2.0, 3.0]],   # en
        [[2.0, 0.1, 1.0, 1.0], [0.3, 1.0, 2.0, 0.5]],    # en
        [[0.4, 0.0, 1.0, 1.0], [0.2, 1.0, 2.0, 0.5]],    # fr
        [[0.5, 1.0, 1.0, 1.0], [0.2, 1.0, 2.0, -0.5]],   # fr
    ])
    sl = torch.tensor([0, 0, 1, 1])
    stats = make_stats(counts, [10, 10], langs, sentence_means=sm, sentence_language=sl)
    # top 3; en ties at .5 among (0,1), (0,2), (1,0) go to the lower flat index (0,1)
    assert threshold(stats, top_m=3).neurons == {"en": [(0, 0), (0, 1), (1, 3)], "fr": [(0, 1), (1, 0), (1, 1)]}
    assert threshold(stats, min_probability=0.5).neurons == {
        "en": [(0, 0), (0, 1), (0, 2), (1, 0), (1, 3)], "fr": [(1, 0), (1, 1)]}
    res = threshold(stats, all_sentences=True)
    assert res.neurons == {"en": [(0, 0), (0, 1), (1, 0), (1, 2), (1, 3)], "fr": [(0, 0), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]}
    assert res.method == "threshold" and res.params == {"all_sentences": True}
    for kwargs in ({}, {"top_m": 2, "min_probability": 0.5}, {"top_m": 2, "all_sentences": True}):
        with pytest.raises(LangNeuronsError, match="exactly one"):
            threshold(stats, **kwargs)
    with pytest.raises(LangNeuronsError, match="top_m"):
        threshold(stats, top_m=0)
    with pytest.raises(LangNeuronsError, match="top_m"):
        threshold(stats, top_m=9)
    with pytest.raises(LangNeuronsError, match="min_probability"):
        threshold(stats, min_probability=1.5)
    with pytest.raises(LangNeuronsError, match="sentence_means"):
        threshold(make_stats(counts, [10, 10], langs), all_sentences=True)


# -- random controls -----------------------------------------------------------------------


def test_random_like_keeps_per_layer_counts():
    src = LanguageNeurons({"en": [(0, 1), (0, 2), (2, 5), (3, 0), (3, 9), (3, 4)], "fr": [(1, 1)], "zh": []},
                          "lape", {"top_rate": 0.01}, "act", MODEL, 4, 50)
    r = random_like(src, seed=3)
    for lang in src.languages:
        assert {l: len(v) for l, v in r.by_layer(lang).items()} == {l: len(v) for l, v in src.by_layer(lang).items()}
    assert r.method == "random_like" and r.params["seed"] == 3 and r.params["source_method"] == "lape"
    assert r.model == MODEL and (r.n_layers, r.d_mlp) == (4, 50)
    assert random_like(src, seed=3) == r
    assert random_like(src, seed=4).neurons != r.neurons
    # a language's control does not depend on the other languages in the set
    assert random_like(src["en"], seed=3).neurons["en"] == r.neurons["en"]
    with pytest.raises(LangNeuronsError, match="seed"):
        random_like(src, seed=-1)


# -- LanguageNeurons -----------------------------------------------------------------------


def example_set(model=MODEL):
    return LanguageNeurons({"en": [(1, 4), (0, 2), (1, 4), (0, 0)], "fr": [(1, 1)]}, "lape", {"top_rate": 0.2},
                           "act", model, 2, 5)


def test_language_neurons_access():
    ln = example_set()
    assert ln.neurons["en"] == [(0, 0), (0, 2), (1, 4)]  # sorted, duplicates removed
    assert ln.languages == ["en", "fr"] and ln.counts() == {"en": 3, "fr": 1}
    assert ln.union() == [(0, 0), (0, 2), (1, 1), (1, 4)]
    assert ln.by_layer("en") == {0: [0, 2], 1: [4]}
    assert ln["fr"].by_layer() == {1: [1]} and ln["fr"].languages == ["fr"]
    with pytest.raises(LangNeuronsError, match="needs a language"):
        ln.by_layer()
    m = ln.mask("en")
    assert m.shape == (2, 5) and m.sum() == 3 and m[1, 4] and not m[1, 1]
    ms = ln.masks()
    assert ms.shape == (2, 2, 5) and torch.equal(ms[1], ln.mask("fr"))
    assert ln.select(["fr", "en"]).languages == ["fr", "en"]
    with pytest.raises(LangNeuronsError, match="'de'"):
        ln["de"]
    one = LanguageNeurons.from_dict({1: [3, 0], 0: [4]}, "de", n_layers=2, d_mlp=5, model=MODEL)
    assert one.neurons == {"de": [(0, 4), (1, 0), (1, 3)]} and one.method == "manual"


def test_language_neurons_validates():
    with pytest.raises(LangNeuronsError, match="layer 2"):
        LanguageNeurons({"en": [(2, 0)]}, "m", {}, "act", {}, 2, 5)
    with pytest.raises(LangNeuronsError, match="index 5"):
        LanguageNeurons({"en": [(0, 5)]}, "m", {}, "act", {}, 2, 5)
    with pytest.raises(LangNeuronsError, match="index -1"):
        LanguageNeurons.from_dict({0: [-1]}, "en", n_layers=2, d_mlp=5)


def test_language_neurons_save_load(tmp_path):
    ln = example_set()
    path = ln.save(tmp_path / "sets" / "lape.json")
    assert path == tmp_path / "sets" / "lape.json"
    d = json.loads(path.read_text())
    assert d == {"format": "tl_langneurons.neurons/1", "method": "lape", "params": {"top_rate": 0.2}, "site": "act",
                 "model": MODEL, "n_layers": 2, "d_mlp": 5, "neurons": {"en": [[0, 0], [0, 2], [1, 4]], "fr": [[1, 1]]}}
    assert LanguageNeurons.load(path) == ln
    assert ln.save(tmp_path / "dir") == tmp_path / "dir" / "neurons.json"
    assert LanguageNeurons.load(tmp_path / "dir") == ln
    assert not list(tmp_path.rglob("*.tmp"))
    # a LAPE result round-trips with its computed params
    res = lape(hand_stats(), top_rate=0.4, filter_rate=0.5)
    assert LanguageNeurons.load(res.save(tmp_path / "r.json")) == res


def test_language_neurons_load_errors(tmp_path):
    with pytest.raises(LangNeuronsError, match="no neuron set"):
        LanguageNeurons.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LangNeuronsError, match="not valid JSON"):
        LanguageNeurons.load(bad)
    good = example_set().to_json()
    for change, pattern in (({"format": "other/2"}, "format"), ({"neurons": {"en": [[0, 9]]}}, "index 9"),
                            ({"neurons": {"en": [3]}}, "pair"), ({"n_layers": "2"}, "n_layers"),
                            ({"neurons": [[0, 1]]}, "neurons")):
        bad.write_text(json.dumps({**good, **change}))
        with pytest.raises(LangNeuronsError, match=pattern):
            LanguageNeurons.load(bad)
    del good["site"]
    bad.write_text(json.dumps(good))
    with pytest.raises(LangNeuronsError, match="site"):
        LanguageNeurons.load(bad)


def test_check_compatible():
    a = example_set()
    a.check_compatible(example_set())
    example_set(model={}).check_compatible(a)  # synthetic statistics: nothing to compare
    with pytest.raises(LangNeuronsError, match="different models"):
        a.check_compatible(example_set(model={**MODEL, "weights_hash": "def"}))
    other_site = LanguageNeurons(a.neurons, a.method, a.params, "post", a.model, 2, 5)
    with pytest.raises(LangNeuronsError, match="different sites"):
        a.check_compatible(other_site)
    with pytest.raises(LangNeuronsError, match="different shapes"):
        a.check_compatible(LanguageNeurons(a.neurons, a.method, a.params, "act", a.model, 3, 5))
