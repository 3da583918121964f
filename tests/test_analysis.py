"""Analyses of neuron sets against hand-worked oracles and naive loop implementations."""

import time

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from tl_langneurons import analysis
from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.neurons import LanguageNeurons
from tl_langneurons.stats import NeuronStats


def make(sets: dict[str, list[tuple[int, int]]], n_layers: int, d_mlp: int) -> LanguageNeurons:
    return LanguageNeurons(neurons={k: sorted(v) for k, v in sets.items()}, method="manual", params={}, site="act",
                           model={}, n_layers=n_layers, d_mlp=d_mlp)


# Worked by hand: 2 layers x 4 neurons.
#   a = {(0,0), (0,1), (1,0)}   b = {(0,1), (1,0), (1,3)}   c = {(1,0)}
#   union = {(0,0), (0,1), (1,0), (1,3)}: (0,0) a only, (0,1) a+b, (1,0) a+b+c, (1,3) b only
#   a∩b = {(0,1), (1,0)}: |∩| 2, |∪| 4, J 1/2, overlap coefficient 2/3
#   a∩c = b∩c = {(1,0)}:  |∩| 1, |∪| 3, J 1/3, overlap coefficient 1/1
@pytest.fixture
def abc() -> LanguageNeurons:
    return make({"a": [(0, 0), (0, 1), (1, 0)], "b": [(0, 1), (1, 0), (1, 3)], "c": [(1, 0)]}, 2, 4)


def test_counts(abc):
    df = analysis.counts(abc)
    assert list(df.language) == ["a", "b", "c", "all"]
    assert list(df.n_neurons) == [3, 3, 1, 4]
    np.testing.assert_allclose(df.share_of_model, [3 / 8, 3 / 8, 1 / 8, 4 / 8])


def test_layer_distribution(abc):
    df = analysis.layer_distribution(abc).set_index(["language", "layer"])
    expected = {("a", 0): 2, ("a", 1): 1, ("b", 0): 1, ("b", 1): 2, ("c", 0): 0, ("c", 1): 1,
                ("all", 0): 2, ("all", 1): 2}
    assert len(df) == len(expected)
    for key, n in expected.items():
        assert df.loc[key, "count"] == n
        assert df.loc[key, "share_of_layer"] == pytest.approx(n / 4)
    assert df.loc[("a", 0), "share_of_language"] == pytest.approx(2 / 3)
    assert df.loc[("c", 1), "share_of_language"] == pytest.approx(1.0)
    assert df.loc[("all", 1), "share_of_language"] == pytest.approx(0.5)
    mat = analysis.layer_matrix(analysis.layer_distribution(abc))
    assert list(mat.index) == ["a", "b", "c"] and mat.to_numpy().tolist() == [[2, 1], [1, 2], [0, 1]]


def test_layer_distribution_empty_language():
    df = analysis.layer_distribution(make({"a": [(0, 0)], "b": []}, 2, 3))
    assert (df[df.language == "b"].share_of_language == 0).all()


def test_shared_by_k(abc):
    df = analysis.shared_by_k(abc)
    assert list(df.k) == [1, 2, 3]
    assert list(df.n_neurons) == [2, 1, 1]
    np.testing.assert_allclose(df.share, [0.5, 0.25, 0.25])


def test_overlap(abc):
    df = analysis.overlap(abc).set_index(["lang_a", "lang_b"])
    assert len(df) == 9
    oracle = {("a", "b"): (2, 4, 1 / 2, 2 / 3), ("a", "c"): (1, 3, 1 / 3, 1.0), ("b", "c"): (1, 3, 1 / 3, 1.0)}
    for (x, y), (inter, union, jac, oc) in oracle.items():
        for pair in ((x, y), (y, x)):  # symmetric
            row = df.loc[pair]
            assert (row.intersection, row.union) == (inter, union)
            assert row.jaccard == pytest.approx(jac)
            assert row.overlap_coefficient == pytest.approx(oc)
    assert df.loc[("a", "a"), "jaccard"] == 1.0 and df.loc[("c", "c"), "intersection"] == 1
    mat = analysis.overlap_matrix(analysis.overlap(abc), "overlap_coefficient")
    assert list(mat.index) == list(mat.columns) == ["a", "b", "c"]
    assert mat.loc["b", "a"] == pytest.approx(2 / 3)


def test_overlap_undefined_for_empty_sets():
    df = analysis.overlap(make({"a": [(0, 0)], "b": [], "c": []}, 1, 2)).set_index(["lang_a", "lang_b"])
    assert df.loc[("a", "b"), "jaccard"] == 0.0
    assert np.isnan(df.loc[("a", "b"), "overlap_coefficient"])
    assert np.isnan(df.loc[("b", "c"), "jaccard"])


def test_unknown_metric(abc):
    with pytest.raises(LangNeuronsError, match="'dice'"):
        analysis.overlap_matrix(analysis.overlap(abc), "dice")


# -- relatedness -------------------------------------------------------------------------------

FAMILIES = {  # 17 languages, 6 families (languages.py)
    "Indo-European": ["es", "fr", "it", "pt", "de"],
    "Uralic": ["fi", "et", "hu"],
    "Afro-Asiatic": ["ar", "he", "am"],
    "Dravidian": ["ta", "te"],
    "Austronesian": ["id", "jv"],
    "Sino-Tibetan": ["zh", "bo"],
}
LANGS = [k for v in FAMILIES.values() for k in v]
L, I = 4, 100


def _sample(rng, pool, n):
    return [(int(f) // I, int(f) % I) for f in rng.choice(pool, size=n, replace=False)]


def planted(seed: int) -> LanguageNeurons:
    """Each family owns a pool of 25 neurons; each language takes 15 of them plus 20 private random ones."""
    rng = np.random.default_rng(seed)
    flat = rng.permutation(L * I)
    pools = {fam: flat[25 * i:25 * (i + 1)] for i, fam in enumerate(FAMILIES)}
    rest = flat[25 * len(FAMILIES):]
    sets = {}
    for fam, langs in FAMILIES.items():
        for k in langs:
            sets[k] = sorted(set(_sample(rng, pools[fam], 15) + _sample(rng, rest, 20)))
    return make(sets, L, I)


def random_sets(seed: int, n: int = 35, langs=LANGS) -> LanguageNeurons:
    rng = np.random.default_rng(seed)
    return make({k: _sample(rng, np.arange(L * I), n) for k in langs}, L, I)


def test_relatedness_matrix():
    m = analysis.relatedness_matrix(["es", "fr", "ru", "deu_Latn", "fi"], by="family")
    assert m.loc["es", "ru"] == 1 and m.loc["es", "fi"] == 0 and m.loc["deu_Latn", "fr"] == 1
    s = analysis.relatedness_matrix(["es", "ru", "uk", "fi"], by="script")
    assert s.loc["ru", "uk"] == 1 and s.loc["es", "ru"] == 0 and s.loc["es", "fi"] == 1
    b = analysis.relatedness_matrix(["es", "fr", "de"], by="branch")
    assert b.loc["es", "fr"] == 1 and b.loc["es", "de"] == 0
    assert (np.diag(b) == 1).all()


@pytest.mark.parametrize("call", [
    lambda: analysis.relatedness_matrix(["es", "xx", "yy"]),
    lambda: analysis.relatedness_test(random_sets(0, langs=["es", "fr", "xx", "yy"]), n_permutations=10),
    lambda: analysis.mantel_test(random_sets(0, langs=["es", "fr", "xx", "yy"]), n_permutations=10),
])
def test_unknown_languages_named(call):
    with pytest.raises(LangNeuronsError, match="'xx', 'yy'"):
        call()


def test_bad_arguments():
    ln = random_sets(0)
    with pytest.raises(LangNeuronsError, match="'genus'"):
        analysis.relatedness_matrix(LANGS, by="genus")
    with pytest.raises(LangNeuronsError, match="'kendall'"):
        analysis.mantel_test(ln, method="kendall")
    with pytest.raises(LangNeuronsError, match="n_permutations"):
        analysis.relatedness_test(ln, n_permutations=0)
    with pytest.raises(LangNeuronsError, match="same group"):  # all one family: nothing to compare
        analysis.relatedness_test(random_sets(0, langs=["es", "fr", "de"]), n_permutations=10)


def test_relatedness_detects_planted_structure():
    res = analysis.relatedness_test(planted(1), by="family", n_permutations=999)
    assert res.within_mean > 2 * res.across_mean
    assert res.statistic == pytest.approx(res.within_mean - res.across_mean)
    assert res.p_value == pytest.approx(1 / 1000)  # the minimum possible with 999 permutations
    assert res.group_sizes == {"Indo-European": 5, "Afro-Asiatic": 3, "Uralic": 3, "Austronesian": 2,
                               "Dravidian": 2, "Sino-Tibetan": 2}
    assert res.n_pairs == 17 * 16 // 2 and res.n_permutations == 999
    mantel = analysis.mantel_test(planted(1), by="family", n_permutations=999)
    assert mantel.statistic > 0.5 and mantel.p_value == pytest.approx(1 / 1000)


def test_relatedness_null_on_random_sets():
    ps = [analysis.relatedness_test(random_sets(s), n_permutations=199, seed=s).p_value for s in range(20)]
    ms = [analysis.mantel_test(random_sets(s), n_permutations=199, seed=s).p_value for s in range(20)]
    for p in (ps, ms):
        assert 0.25 < np.mean(p) < 0.75  # p-values are ~uniform when nothing is planted
        assert sum(x < 0.05 for x in p) <= 4


def naive_relatedness(ln, by, metric, perms):
    o = analysis.overlap_matrix(analysis.overlap(ln), metric).to_numpy()
    g = analysis.language_table(ln.languages)[by].to_numpy()
    K = len(g)

    def stat(groups):
        within, across = [], []
        for i in range(K):
            for j in range(i + 1, K):
                (within if groups[i] == groups[j] else across).append(o[i, j])
        return np.mean(within) - np.mean(across)

    return stat(g), np.array([stat(g[p]) for p in perms])


def naive_mantel(ln, by, metric, method, perms):
    o = analysis.overlap_matrix(analysis.overlap(ln), metric).to_numpy()
    r = analysis.relatedness_matrix(ln.languages, by).to_numpy()
    iu = np.triu_indices(len(o), 1)
    corr = (lambda x, y: pearsonr(x, y)[0]) if method == "pearson" else (lambda x, y: spearmanr(x, y)[0])
    return corr(o[iu], r[iu]), np.array([corr(o[iu], r[np.ix_(p, p)][iu]) for p in perms])


def test_relatedness_matches_naive_loop():
    ln = planted(2)
    res = analysis.relatedness_test(ln, by="family", metric="overlap_coefficient", n_permutations=300, seed=7)
    obs, null = naive_relatedness(ln, "family", "overlap_coefficient", analysis._permutations(17, 300, 7))
    assert res.statistic == pytest.approx(obs)
    np.testing.assert_allclose(res.null, null, atol=1e-12)
    assert res.p_value == pytest.approx((1 + (null >= obs - 1e-12).sum()) / 301)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("by", ["family", "script"])
def test_mantel_matches_naive_loop(method, by):
    ln = random_sets(7)  # a weak correlation, so p lands mid-range and ties in the count matter
    res = analysis.mantel_test(ln, by=by, metric="jaccard", method=method, n_permutations=300, seed=11)
    obs, null = naive_mantel(ln, by, "jaccard", method, analysis._permutations(17, 300, 11))
    assert res.statistic == pytest.approx(obs, abs=1e-12)
    np.testing.assert_allclose(res.null, null, atol=1e-12)
    assert res.p_value == pytest.approx((1 + (null >= obs - 1e-12).sum()) / 301)
    assert res.test == f"mantel_{method}" and res.n_languages == 17


def test_mantel_accepts_a_matrix():
    ln = planted(4)
    by_family = analysis.mantel_test(ln, by="family", n_permutations=200)
    matrix = analysis.mantel_test(ln, by=analysis.relatedness_matrix(LANGS, "family"), n_permutations=200)
    assert matrix.statistic == pytest.approx(by_family.statistic)
    np.testing.assert_allclose(matrix.null, by_family.null)
    with pytest.raises(LangNeuronsError, match="'bo'"):
        analysis.mantel_test(ln, by=analysis.relatedness_matrix(LANGS[:-1], "family"), n_permutations=10)


def test_empty_sets_are_excluded():
    sets = {k: v for k, v in planted(5).neurons.items()}
    sets["en"] = []
    res = analysis.relatedness_test(make(sets, L, I), n_permutations=99)
    assert res.excluded == ("en",) and res.n_languages == 17
    assert "en" not in set(res.pairs.lang_a) | set(res.pairs.lang_b)


def test_permutation_tests_are_fast():
    langs = list(analysis.LANGUAGES)[:27]
    ln = random_sets(0, langs=langs)
    t = time.perf_counter()
    analysis.relatedness_test(ln, n_permutations=10000)
    analysis.mantel_test(ln, method="spearman", n_permutations=10000)
    assert time.perf_counter() - t < 5.0  # ~0.3 s on an idle core; slack for a shared machine


def test_to_frame():
    row = analysis.relatedness_test(planted(1), n_permutations=99).to_frame()
    assert row.shape[0] == 1 and {"statistic", "p_value", "by", "metric"} <= set(row.columns)


# -- stability ---------------------------------------------------------------------------------


def test_jaccard_sets(abc):
    other = make({"c": [(1, 0), (1, 1)], "a": [(0, 0), (1, 2)], "b": [(0, 1), (1, 0), (1, 3)]}, 2, 4)
    df = analysis.jaccard_sets(abc, other).set_index("language")
    assert list(df.index) == ["a", "b", "c"]
    # a: {00,01,10} vs {00,12}: ∩ 1, ∪ 4; b identical; c: {10} vs {10,11}: ∩ 1, ∪ 2
    np.testing.assert_allclose(df.jaccard, [1 / 4, 1.0, 1 / 2])
    assert list(df.intersection) == [1, 3, 1]
    # chance: E|∩| = 3·2/8 = 0.75 for a, so 0.75 / (3 + 2 − 0.75)
    assert df.loc["a", "chance_jaccard"] == pytest.approx(0.75 / 4.25)
    with pytest.raises(LangNeuronsError, match="different languages"):
        analysis.jaccard_sets(abc, make({"a": [], "b": []}, 2, 4))
    with pytest.raises(LangNeuronsError, match="shapes"):
        analysis.jaccard_sets(abc, make({"a": [], "b": [], "c": []}, 2, 5))


def _stats(p: torch.Tensor, langs: list[str], n: float = 1000.0) -> NeuronStats:
    K = len(langs)
    z = torch.zeros_like(p, dtype=torch.float64)
    return NeuronStats(langs, "act", torch.full((K,), n, dtype=torch.float64), p.double() * n, z, z)


def _top(stats: NeuronStats, n: int = 5) -> LanguageNeurons:
    """A stand-in identification method: each language's n most often active neurons."""
    p = stats.activation_probability()
    L_, I_ = p.shape[1:]
    sets = {k: [(int(f) // I_, int(f) % I_) for f in p[i].flatten().topk(n).indices] for i, k in enumerate(stats.languages)}
    return make(sets, L_, I_)


def test_split_half_stability():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(3, 2, 50, generator=gen) * 0.5
    p[0, 0, :5] = 0.9  # language x: five clearly planted neurons
    noise = torch.rand(3, 2, 50, generator=gen) * 0.5
    half_a = _stats(p, ["x", "y", "z"])
    half_b = _stats(torch.where(torch.arange(3)[:, None, None] == 0, p, noise)[[2, 0, 1]], ["z", "x", "y"])
    df = analysis.split_half_stability(half_a, half_b, _top).set_index("language")
    assert list(df.index) == ["x", "y", "z"]
    assert df.loc["x", "jaccard"] == 1.0  # the planted set is found on both halves
    assert (df.loc[["y", "z"], "jaccard"] < 0.5).all()  # pure noise: the halves disagree
    with pytest.raises(LangNeuronsError, match="different languages"):
        analysis.split_half_stability(half_a, _stats(p[:2], ["x", "y"]), _top)
