"""The method comparison: equal-size sets, overlap by hand, the effect tables, the command."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import SENTENCES
from tl_langneurons import LangNeuronsError, LanguageNeurons, record
from tl_langneurons.compare import (equal_size_sets, effect_of_methods, method_summary,
                                    overlap_between_methods)
from tl_langneurons.identify import lape_entropy


@pytest.fixture(scope="module")
def tiny_stats(tiny_llama):
    return record(tiny_llama, SENTENCES, batch_size=4, sentence_means=True, plnd=True, progress=False)


def test_equal_size_sets(tiny_stats):
    sets = equal_size_sets(tiny_stats, 6, ap_positive=4, ap_negative=12)
    assert list(sets) == ["lape", "ap", "threshold", "plnd"]
    for m, s in sets.items():
        assert s.languages == tiny_stats.languages
        counts = [len(v) for v in s.neurons.values()]
        assert all(c == 6 for c in counts) if m != "lape" else all(c <= 6 for c in counts), (m, counts)
    # LAPE: within each language the kept neurons have the smallest entropies among its candidates
    ent = lape_entropy(tiny_stats)
    H = ent.ranked.numpy()
    p = tiny_stats.activation_probability().numpy()
    for k, lang in enumerate(tiny_stats.languages):
        kept = sets["lape"].neurons[lang]
        cand = np.isfinite(H) & (p[k] > ent.activation_bar)
        assert all(cand[l, j] for l, j in kept)
        if kept and len(kept) == 6:
            worst = max(H[l, j] for l, j in kept)
            assert (H[cand] < worst).sum() <= 6
    with pytest.raises(LangNeuronsError, match="unknown method 'sae'"):
        equal_size_sets(tiny_stats, 6, methods=["sae"])
    with pytest.raises(LangNeuronsError, match="n must be"):
        equal_size_sets(tiny_stats, 5)


def test_overlap_by_hand():
    mk = lambda d: LanguageNeurons(d, "x", {}, "act", {}, 2, 4)  # noqa: E731
    a = mk({"en": [(0, 0), (0, 1), (1, 2)], "de": [(1, 3)]})
    b = mk({"en": [(0, 1), (1, 2), (1, 3)], "de": []})
    per_lang, per_layer = overlap_between_methods({"a": a, "b": b})
    en = per_lang[per_lang.language == "en"].iloc[0]
    assert (en.intersection, en.jaccard) == (2, pytest.approx(2 / 4))
    de = per_lang[per_lang.language == "de"].iloc[0]
    assert (de.n_a, de.n_b, de.intersection, de.jaccard) == (1, 0, 0, 0.0)
    l0 = per_layer[(per_layer.language == "en") & (per_layer.layer == 0)].iloc[0]
    assert (l0.n_a, l0.n_b, l0.intersection, l0.jaccard) == (2, 1, 1, 0.5)
    with pytest.raises(LangNeuronsError, match="at least two methods"):
        overlap_between_methods({"a": a})


def test_effect_tables(tiny_llama, tiny_stats):
    sets = equal_size_sets(tiny_stats, 6, methods=["threshold", "plnd"])
    ppl, effect = effect_of_methods(tiny_llama, {k: v[:2] for k, v in SENTENCES.items()}, sets, batch_size=4,
                                    progress=False)
    assert set(ppl.method) == {"threshold", "plnd"} and set(ppl.condition) == {"baseline", "intervention", "control"}
    base = ppl[ppl.condition == "baseline"].groupby("evaluated")["nll"].nunique()
    assert (base == 1).all()  # the same held-out tokens for every method
    for r in effect.itertuples():
        own = ppl[(ppl.method == r.method) & (ppl.ablated == r.language) & (ppl.evaluated == r.language)]
        delta = float(own[own.condition == "intervention"].nll.iloc[0] - own[own.condition == "baseline"].nll.iloc[0])
        assert r.delta_nll == pytest.approx(delta) and r.delta_nll_per_neuron == pytest.approx(delta / 6)
    overlap, _ = overlap_between_methods(sets)
    table = method_summary(effect, overlap)
    assert list(table.method) == ["threshold", "plnd"]
    assert table.loc[0, "jaccard_threshold"] == 1.0
    assert table.loc[0, "jaccard_plnd"] == pytest.approx(overlap.jaccard.mean())


def test_compare_command(tiny_llama_dir, tiny_stats, tmp_path):
    from tl_langneurons.cli import main

    st = tiny_stats.save(tmp_path / "stats")
    corpus = tmp_path / "eval"
    corpus.mkdir()
    for k, v in SENTENCES.items():
        (corpus / f"{k}.txt").write_text("\n".join(v[:2]), encoding="utf-8")
    out = tmp_path / "cmp"
    assert main(["compare-methods", "--model", tiny_llama_dir, "--stats", str(st), "--n", "4", "--methods",
                 "lape,threshold", "--corpus", str(corpus), "--out", str(out)]) == 0
    table = pd.read_csv(out / "methods.csv")
    assert list(table.method) == ["lape", "threshold"]
    assert {"delta_nll_per_neuron", "control_delta_nll_per_neuron", "jaccard_lape"} <= set(table.columns)
    assert json.loads((out / "sets" / "threshold.json").read_text())["method"] == "threshold"
    assert (out / "compare_methods.png").is_file()
