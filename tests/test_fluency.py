"""Fluency of generations: seq-rep-n against hand-worked cases; the NLL of a continuation against a
plain Hugging Face computation; steering scores every generation's NLL under the *unsteered* model
(not under its own intervention); the fluent target-language rate counts only generations that
pass both tests; the best cell of a sweep is chosen by it; a degenerate loop is not fluent."""

import math

import pandas as pd
import pytest
import torch
from conftest import SENTENCES

from tl_langneurons import LangNeuronsError
from tl_langneurons import evaluate as ev
from tl_langneurons.evaluate.fluency import FluencyCriterion, continuation_nll, fluency_criterion, repetition
from tl_langneurons.intervene import Intervention
from tl_langneurons.neurons import LanguageNeurons
from tl_langneurons.outputs.measurements import write_steer
from tl_langneurons.tokens import encode


@pytest.mark.parametrize("ids, n, expected", [
    ([1, 2, 3, 4, 5], 2, 0.0),            # all bigrams distinct
    ([7, 7, 7, 7, 7], 2, 1 - 1 / 4),      # 4 bigrams, 1 distinct
    ([1, 2, 1, 2, 1, 2], 2, 1 - 2 / 5),   # (1,2) (2,1) (1,2) (2,1) (1,2)
    ([1, 2, 3, 1, 2, 3, 1], 4, 1 - 3 / 4),  # (1,2,3,1) (2,3,1,2) (3,1,2,3) (1,2,3,1)
    ([1, 2, 3], 4, 0.0),                  # shorter than n: no n-grams
    ([], 4, 0.0),
])
def test_repetition_by_hand(ids, n, expected):
    assert repetition(ids, n) == pytest.approx(expected)


def test_continuation_nll_equals_hugging_face(tiny_llama, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    prompts = [encode(tiny_llama.tokenizer, s) for s in ("", "Die Katze", "Кошка спит на")]
    conts = [tiny_llama.tokenizer(t, add_special_tokens=False)["input_ids"]
             for t in ("The cat sleeps.", " schläft auf der Bank.", "")]
    got = continuation_nll(tiny_llama, prompts, conts, batch_size=2)
    for p, c, g in zip(prompts, conts, got):
        if not c:
            assert math.isnan(g)
            continue
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logp = hf(input_ids=ids).logits[0].log_softmax(-1)
        want = -sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(c)) / len(c)
        assert g == pytest.approx(want, abs=1e-5)


def test_criterion_thresholds_are_quantiles_of_human_text(tiny_llama):
    crit = fluency_criterion(tiny_llama, SENTENCES, n_tokens=5, quantile=0.5, max_sentences=4)
    for lang, sents in SENTENCES.items():
        pairs = [(ids[:1], ids[1:6]) for ids in (encode(tiny_llama.tokenizer, s) for s in sents)]
        nll = pd.Series(continuation_nll(tiny_llama, [p for p, _ in pairs], [c for _, c in pairs]))
        assert crit.max_nll[lang] == pytest.approx(float(nll.median()))
        assert crit.human[lang]["n_sentences"] == 4 and crit.human[lang]["human_rep_rejected"] == 0.0
    with pytest.raises(LangNeuronsError, match="quantile"):
        fluency_criterion(tiny_llama, SENTENCES, quantile=1.5)


def test_fluent_needs_both_tests_and_a_known_language():
    crit = FluencyCriterion({"de": 4.0, "ru": 3.0}, max_rep=0.2)
    df = pd.DataFrame({"detected": ["de", "de", "de", "ru", "ja", None, "de"],
                       "n_new_tokens": [10, 10, 10, 10, 10, 10, 0],
                       "nll": [3.9, 4.1, 1.0, 3.5, 1.0, 1.0, math.nan],
                       "rep": [0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0]})
    # fluent; too surprising; a loop (low NLL, as loops have); ru's own threshold is 3; no threshold
    # for ja; nothing identified; empty
    assert crit.fluent(df).tolist() == [True, False, False, False, False, False, False]
    with pytest.raises(LangNeuronsError, match="fluency columns"):
        crit.fluent(df.drop(columns="rep"))


def test_summary_counts_fluent_target_generations_only():
    rows = []
    for cond, det, fl in (("intervention", ["de", "de", "de", "en"], [True, False, True, True]),
                          ("baseline", ["en", "en", "de", "en"], [True, True, False, True])):
        for d, f in zip(det, fl):
            rows.append({"target": "de", "condition": cond, "detected": d, "fluent": f, "nll": 2.0, "rep": 0.1})
    s = ev.steer_summary(pd.DataFrame(rows)).iloc[0]
    assert s["target_rate"] == 0.75 and s["target_fluent_rate"] == 0.5
    assert s["baseline_rate"] == 0.25 and s["baseline_fluent_rate"] == 0.0
    lo, hi = ev.wilson(2, 4)
    assert (s["target_fluent_low"], s["target_fluent_high"]) == pytest.approx((lo, hi))
    assert s["target_nll"] == 2.0 and s["baseline_rep"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def one_set(tiny_llama):
    L = tiny_llama.cfg.n_layers
    return LanguageNeurons({"de": [(l, i) for l in range(L) for i in range(6)]}, "manual", {}, "act", {},
                           L, tiny_llama.cfg.d_mlp)


def test_steering_scores_fluency_under_the_unsteered_model(tiny_llama, one_set):
    iv = Intervention(one_set, "scale", factor=40.0, language="de")
    df = ev.steer_with(tiny_llama, "de", iv, prompts=["", "Die"], n_samples=2, seed=1, progress=False)
    assert {"n_new_tokens", "nll", "rep"} <= set(df.columns) and "fluent" not in df.columns
    steered = df[df.condition == "intervention"]
    assert not steered["generation"].equals(df[df.condition == "baseline"]["generation"].reset_index(drop=True))
    # recompute the NLL of the steered generations by hand, with and without the intervention
    from tl_langneurons.evaluate.generation import generate_ids

    toks = [encode(tiny_llama.tokenizer, p) for p in ("", "", "Die", "Die")]
    ids = generate_ids(tiny_llama, toks, [iv], "all", ev.DEFAULT_GENERATION, 64, 1, progress=False)
    unsteered = continuation_nll(tiny_llama, toks, ids)
    assert steered["nll"].tolist() == pytest.approx(unsteered, nan_ok=True)
    assert steered["rep"].tolist() == pytest.approx([repetition(c) for c in ids])
    from tl_langneurons.intervene import intervene

    with intervene(tiny_llama, iv):
        under_iv = continuation_nll(tiny_llama, toks, ids)
    assert not pytest.approx(under_iv, nan_ok=True) == unsteered  # scored without the intervention


def test_sweep_marks_fluent_and_write_steer_chooses_by_it(tiny_llama, one_set, tmp_path):
    # thresholds so lenient that everything identified as de passes, except loops
    crit = FluencyCriterion({"de": 1e9, "en": 1e9}, max_rep=0.0)
    df = ev.steer_with(tiny_llama, "de", Intervention(one_set, "scale", factor=2.0, language="de"),
                       prompts=[""], n_samples=4, fluency=crit, progress=False)
    assert df["fluent"].tolist() == crit.fluent(df).tolist()
    assert df["fluent"].tolist() == ((df.n_new_tokens >= 1) & (df.rep <= 0.0) & df.detected.isin(["de", "en"])).tolist()

    # write_steer's best cell: the highest fluent target rate, not the highest raw rate
    rows = []
    for factor, det, fl in ((8.0, ["de"] * 4, [False] * 4), (4.0, ["de", "de", "en", "en"], [True, True, True, True])):
        for cond in ("baseline", "intervention"):
            for d, f in zip(det, fl):
                rows.append({"target": "de", "condition": cond, "mode": "set", "factor": factor, "statistic": "mean",
                             "positions": "all", "prompt_id": 0, "prompt_language": None, "prompt": "", "sample": 0,
                             "generation": "x", "detected": d if cond == "intervention" else "en", "fluent": f})
    summary = write_steer(pd.DataFrame(rows), tmp_path / "s")
    assert summary["settings"]["factor"] == 4.0 and "fluent" in summary["best"]
    assert summary["mean"]["target_fluent_rate"] == 0.5


def test_fluency_argument_is_checked(tiny_llama, one_set):
    with pytest.raises(LangNeuronsError, match="fluency must be"):
        ev.steer_with(tiny_llama, "de", Intervention(one_set, "zero", language="de"), prompts=[""], fluency="yes",
                      progress=False)
