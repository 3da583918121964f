"""Measurements against oracles: NLL equals a plain Hugging Face computation on the same tokens;
identity interventions change nothing; the deactivation matrix equals zeroing down-projection
columns, with one baseline; summaries match hand computations; Wilson intervals match published
values; language identification is right on real text; steering is reproducible and batching does
not change it; LSS log-probabilities equal Hugging Face's."""

import copy
import math

import pandas as pd
import pytest
import torch
from conftest import SENTENCES, assert_greedy_is_hugging_face

from tl_langneurons import LangNeuronsError, NeuronStats
from tl_langneurons.corpus import load_corpus
from tl_langneurons.intervene import Intervention, intervene
from tl_langneurons.neurons import LanguageNeurons
from tl_langneurons.tokens import encode

from tl_langneurons import evaluate as ev
from tl_langneurons.evaluate import langid
from tl_langneurons.evaluate.generation import generate
from tl_langneurons.evaluate.perplexity import ratio

LANGS = list(SENTENCES)  # en de ru ja


@pytest.fixture(scope="module")
def hf_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def neurons(tiny_llama):
    L, I = tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp
    g = torch.Generator().manual_seed(3)
    sets = {lang: [(l, int(i)) for l in range(L) for i in torch.randperm(I, generator=g)[:4 + k]]
            for k, lang in enumerate(LANGS)}
    return LanguageNeurons(sets, "manual", {}, "act", {}, L, I)


@pytest.fixture(scope="module")
def stats(tiny_llama):
    g = torch.Generator().manual_seed(4)
    K, L, I = len(LANGS), tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp
    z = torch.zeros(K, L, I, dtype=torch.float64)
    return NeuronStats(LANGS, "act", torch.full((K,), 10.0, dtype=torch.float64), z, torch.rand(K, L, I, generator=g).double(), z)


def hf_nll(hf, model, sentences, edit=None):
    """Summed NLL and token count, one sentence at a time, in plain Hugging Face."""
    total, n = 0.0, 0
    for s in sentences:
        ids = torch.tensor([encode(model.tokenizer, s)])
        with torch.no_grad():
            logits = (edit or hf)(input_ids=ids).logits
        total += float(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum"))
        n += ids.shape[1] - 1
    return total, n


def zeroed(hf, pairs):
    """HF copy with the down-projection columns of ``pairs`` zeroed: the weight-edit oracle of mode zero."""
    hf2 = copy.deepcopy(hf)
    with torch.no_grad():
        for l, i in pairs:
            hf2.model.layers[l].mlp.down_proj.weight[:, i] = 0.0
    return hf2


def test_nll_equals_hugging_face(tiny_llama, hf_llama):
    df = ev.nll_per_language(tiny_llama, SENTENCES, batch_size=3, progress=False)
    assert list(df.columns) == ["language", "nll", "ppl", "n_tokens"] and list(df["language"]) == LANGS
    for r in df.itertuples():
        total, n = hf_nll(hf_llama, tiny_llama, SENTENCES[r.language])
        assert r.n_tokens == n  # BOS is never a target, padding never counts
        assert r.nll == pytest.approx(total / n, abs=1e-5)
        assert r.ppl == pytest.approx(math.exp(r.nll))


def test_identity_intervention_equals_baseline_and_zero_equals_weight_edit(tiny_llama, hf_llama, neurons):
    base = ev.nll_per_language(tiny_llama, SENTENCES, batch_size=4, progress=False)
    one = ev.nll_per_language(tiny_llama, SENTENCES, batch_size=4, progress=False,
                              interventions=Intervention(neurons, "scale", factor=1.0, language="de"))
    pd.testing.assert_frame_equal(base, one)
    zero = ev.nll_per_language(tiny_llama, {"de": SENTENCES["de"]}, progress=False,
                               interventions=[Intervention(neurons, "zero", language="de")])
    total, n = hf_nll(hf_llama, tiny_llama, SENTENCES["de"], zeroed(hf_llama, neurons.neurons["de"]))
    assert zero["nll"][0] == pytest.approx(total / n, abs=1e-5)
    assert zero["nll"][0] != pytest.approx(float(base.loc[base.language == "de", "nll"].iloc[0]), abs=1e-6)


def test_perplexity_matrix(tiny_llama, hf_llama, neurons):
    calls = []
    with tiny_llama.hooks(fwd_hooks=[("hook_embed", lambda act, hook: calls.append(1))]):
        df = ev.perplexity_matrix(tiny_llama, SENTENCES, neurons, batch_size=4, progress=False)
    K = len(LANGS)
    assert len(calls) == K * (1 + 2 * K)  # one batch per language: one baseline pass + K ablations × 2
    assert list(df.columns) == ["ablated", "evaluated", "condition", "nll", "ppl", "n_tokens", "n_neurons"]
    assert len(df) == K * K * 3 and set(df.condition) == set(ev.CONDITIONS)
    base = ev.nll_per_language(tiny_llama, SENTENCES, batch_size=4, progress=False).set_index("language")
    for lang, g in df[df.condition == "baseline"].groupby("evaluated"):
        assert g.nll.nunique() == 1 and g.nll.iloc[0] == base.loc[lang, "nll"]  # one baseline, repeated
    assert (df.groupby("evaluated").n_tokens.nunique() == 1).all()  # same tokens in every condition
    # the intervention row of "ru" on "en" is the model with ru's down-projection columns zeroed
    total, n = hf_nll(hf_llama, tiny_llama, SENTENCES["en"], zeroed(hf_llama, neurons.neurons["ru"]))
    row = df[(df.ablated == "ru") & (df.evaluated == "en") & (df.condition == "intervention")]
    assert float(row.nll.iloc[0]) == pytest.approx(total / n, abs=1e-5)
    summary = ev.perplexity_summary(df)
    assert 0.0 <= summary["frac_most_hurt"] <= 1.0 and summary["n_ablated"] == K
    sub = ev.perplexity_matrix(tiny_llama, SENTENCES, neurons, languages=["en", "de"], control=None, progress=False)
    assert set(sub.condition) == {"baseline", "intervention"} and len(sub) == 8


def test_perplexity_summary_math():
    # baseline 1.0 everywhere; ΔNLL of intervention rows (ablated → evaluated), control rows
    delta = {("a", "a"): 0.5, ("a", "b"): 0.1, ("a", "c"): 0.0,
             ("b", "a"): 0.2, ("b", "b"): 0.3, ("b", "c"): 0.1,
             ("c", "a"): 0.0, ("c", "b"): 0.4, ("c", "c"): 0.1}
    control = {k: (0.05 if k[0] == k[1] else 0.01) for k in delta}
    rows = []
    for (a, e), d in delta.items():
        for cond, v in (("baseline", 1.0), ("intervention", 1.0 + d), ("control", 1.0 + control[(a, e)])):
            rows.append({"ablated": a, "evaluated": e, "condition": cond, "nll": v, "ppl": math.exp(v), "n_tokens": 10})
    s = ev.perplexity_summary(pd.DataFrame(rows))
    assert s["diag_delta_nll"] == pytest.approx(0.3)
    assert s["offdiag_delta_nll"] == pytest.approx(0.8 / 6)
    assert s["control_diag_delta_nll"] == pytest.approx(0.05)
    assert s["control_offdiag_delta_nll"] == pytest.approx(0.01)
    assert s["diag_over_offdiag"] == pytest.approx(0.3 / (0.8 / 6))
    assert s["diag_over_control"] == pytest.approx(6.0)
    assert s["frac_most_hurt"] == pytest.approx(2 / 3)  # a and b, not c (0.4 on b beats its own 0.1)
    assert ratio(0.1, -0.2) == math.inf and math.isnan(ratio(-0.1, 0.0))


@pytest.mark.parametrize("k,n,lo,hi", [(0, 10, 0.0, 0.2775), (1, 10, 0.0179, 0.4042), (5, 10, 0.2366, 0.7634),
                                       (10, 10, 0.7225, 1.0),
                                       # Newcombe (1998), Stat. Med. 17:857, Table II, method 3
                                       (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
                                       (1, 29, 0.0061, 0.1718)])
def test_wilson(k, n, lo, hi):
    a, b = ev.wilson(k, n)
    assert a == pytest.approx(lo, abs=1e-4) and b == pytest.approx(hi, abs=1e-4)


def test_wilson_holds_the_rate_exactly():
    # at k = 0 and k = n the bound is exactly 0 / 1: rounding once left 3e-17 > 0 = rate, and error
    # bars drawn from rate - low failed on the negative length
    for n in range(1, 300):
        assert ev.wilson(0, n)[0] == 0.0 and ev.wilson(n, n)[1] == 1.0
        for k in range(n + 1):
            lo, hi = ev.wilson(k, n)
            assert lo <= k / n <= hi


def test_wilson_rejects_bad_counts():
    assert all(math.isnan(x) for x in ev.wilson(0, 0))
    for k, n in ((3, 2), (-1, 5), (1.5, 3)):
        with pytest.raises(LangNeuronsError):
            ev.wilson(k, n)


def test_langid_on_real_text():
    langs = ["en", "de", "fr", "ru", "el", "zh", "ja", "ko", "ar", "he", "th", "tr", "vi"]
    par = load_corpus("builtin", split="parallel", languages=langs)
    for lang in langs:
        sents = sorted(par[lang][:40], key=len)[-4:]  # the longest of the first 40: unambiguous
        assert langid.detect(sents) == [lang] * 4, lang
    assert langid.detect(["", "   ", "12 + 7 = 19 !"]) == ["unknown"] * 3
    assert langid.detect("東京都庁") == ["zh"]  # all Han, no kana: never ja
    assert langid.detect(["これは日本語の文です。"]) == ["ja"]
    am = next(s for s in load_corpus("builtin", split="eval", languages=["am"])["am"] if "፡" in s and len(s) > 40)
    assert langid.detect([am]) == ["am"]


STEER = dict(n_prompts=3, n_samples=2, generation=ev.GenerationConfig(max_new_tokens=5), progress=False)


def test_steer_rows_are_reproducible(tiny_llama, neurons, stats):
    state = torch.get_rng_state()
    a = ev.steer(tiny_llama, neurons, "de", stats=stats, seed=7, **STEER)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random state is left alone
    b = ev.steer(tiny_llama, neurons, "de", stats=stats, seed=7, **STEER)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 * 3 * 2 and list(a.condition.unique()) == ["baseline", "intervention", "control"]
    for col in ("target", "condition", "prompt", "generation", "detected"):
        assert col in a.columns
    assert "de" not in set(a.prompt_language)  # default prompts are in the other languages
    assert list(a.detected) == langid.detect(list(a.generation))
    c = ev.steer(tiny_llama, neurons, "de", stats=stats, seed=8, **STEER)
    assert list(c.generation) != list(a.generation)
    s = ev.steer_summary(a)
    assert len(s) == 1 and s.n[0] == 6
    for name in ("target", "baseline", "control"):
        assert 0 <= s[f"{name}_low"][0] <= s[f"{name}_rate"][0] <= s[f"{name}_high"][0] <= 1


def test_steer_identity_batching_and_empty_prompt(tiny_llama, neurons):
    kw = dict(prompts=["", "Die Katze", "Кошка спит на тёплом"], mode="scale", generation=ev.GenerationConfig(max_new_tokens=6),
              progress=False)
    one = ev.steer(tiny_llama, neurons, "ru", factor=1.0, n_samples=2, seed=1, **kw)
    gens = {c: list(g.generation) for c, g in one.groupby("condition")}
    assert gens["intervention"] == gens["baseline"] == gens["control"]  # scale 1 changes nothing
    # left-padded batches give what one prompt at a time gives (greedy: no sampling noise)
    greedy = dict(kw, generation=ev.GenerationConfig(max_new_tokens=6, greedy=True), control=None, positions="generated")
    batched = ev.steer(tiny_llama, neurons, "ru", factor=3.0, batch_size=8, **greedy)
    single = ev.steer(tiny_llama, neurons, "ru", factor=3.0, batch_size=1, **greedy)
    assert list(batched.generation) == list(single.generation) and len(batched) == 6
    prompt_only = ev.steer(tiny_llama, neurons, "ru", factor=3.0, **dict(greedy, positions="prompt"))
    assert len(prompt_only) == 6


def test_steer_sweep_shares_the_baseline(tiny_llama, neurons, stats):
    df = ev.steer_sweep(tiny_llama, neurons, ["en", "ja"], [2.0, 8.0], ["set", "add"], stats=stats, **STEER)
    assert len(df) == 2 * 2 * 2 * 3 * 6
    base = df[df.condition == "baseline"]
    assert (base.groupby(["target", "prompt_id", "sample"]).generation.nunique() == 1).all()
    s = ev.steer_summary(df)
    assert len(s) == 8 and set(s.columns) >= {"target", "mode", "factor", "target_rate", "baseline_rate", "control_rate"}


def test_steer_with_equals_steer_and_combines_interventions(tiny_llama, neurons, stats):
    from tl_langneurons.identify import random_like

    a = ev.steer(tiny_llama, neurons, "de", stats=stats, factor=4.0, seed=3, **STEER)
    ctrl = random_like(neurons.select(["de"]), 3)
    b = ev.steer_with(tiny_llama, "de", Intervention(neurons, "set", factor=4.0, stats=stats, language="de"),
                      control=[Intervention(ctrl, "set", factor=4.0, stats=stats, language="de")], seed=3, **STEER)
    cols = ["condition", "prompt_id", "prompt", "sample", "generation", "detected"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    # language arithmetic: source off, then the target's mean added; without the baseline
    arith = [Intervention(neurons, "zero", language="en"), Intervention(neurons, "add", stats=stats, language="de")]
    c = ev.steer_with(tiny_llama, "de", arith, source="en", baseline=False, **STEER)
    assert list(c.condition.unique()) == ["intervention"] and set(c.prompt_language) == {"en"}
    assert set(ev.steer_summary(c).columns) >= {"target_rate", "target_low", "target_high"}
    with pytest.raises(LangNeuronsError, match="at least one intervention"):
        ev.steer_with(tiny_llama, "de", [], **STEER)


def test_lss_on_the_fixture(tiny_llama, hf_llama, neurons, stats):
    items = ev.load_facts(languages=["en", "de"])
    assert len(items) >= 40 and all(set(it["prompt"]) >= {"en", "de", "fr", "es", "ru"} for it in items)
    df = ev.lss(tiny_llama, neurons, items, "en", "de", factor=4.0, mode="scale", batch_size=16, progress=False)
    n_usable = sum(it["object"]["en"] != it["object"]["de"] for it in items)
    assert len(df) == 3 * n_usable  # London/London, Berlin/Berlin … cannot shift and are left out
    s = ev.lss_summary(df)
    assert set(s.condition) == {"intervention", "control"}
    assert ((s.lss >= 0) & (s.lss <= 1)).all()
    # the baseline log-probability is Hugging Face's, and scale 1 shifts nothing
    r = df[df.condition == "baseline"].iloc[0]
    item = next(it for it in items if it["id"] == r["item"])
    ctx, cont = ev.continuation(tiny_llama, item["prompt"]["en"], item["object"]["de"], " ")
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        lp = hf_llama(input_ids=ids).logits[0].log_softmax(-1)
    expected = sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
    assert r["logp_target"] == pytest.approx(expected, abs=1e-4)
    same = ev.lss(tiny_llama, neurons, items[:8], "en", "ru", factor=1.0, mode="scale", control=None, progress=False)
    assert not same.shifted.any()
    setm = ev.lss(tiny_llama, neurons, items[:6], "de", "ru", stats=stats, positions="prompt", control=None, progress=False)
    assert set(setm.condition) == {"baseline", "intervention"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(target="xx"), "unknown target language 'xx'"),
    (dict(target="de", factor="big"), "factor must be a finite number, got 'big'"),
    (dict(target="de", factor=float("nan")), "factor must be a finite number"),
    (dict(target="de", mode="set"), "needs stats="),
    (dict(target="de", mode="zero"), "unknown steering mode 'zero'"),
    (dict(target="de", mode="scale", control="shuffled"), "unknown control 'shuffled'"),
    (dict(target="de", mode="scale", n_samples=0), "n_samples must be a positive integer"),
    (dict(target="de", mode="scale", prompts=[]), "prompts must be a non-empty list"),
    (dict(target="de", mode="scale", source="xx"), "language 'xx' is not in the built-in parallel split"),
])
def test_steer_errors(tiny_llama, neurons, kwargs, match):
    with pytest.raises(LangNeuronsError, match=match):
        kwargs.setdefault("generation", ev.GenerationConfig(max_new_tokens=2))
        ev.steer(tiny_llama, neurons, progress=False, n_prompts=1, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature must be > 0 when sampling"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
    (dict(top_k=True), "top_k must be a positive integer or None, got True"),
    (dict(repetition_penalty=-1.0), "repetition_penalty must be > 0"),
])
def test_generation_config_checks_itself(kwargs, match):
    with pytest.raises(LangNeuronsError, match=match):
        ev.GenerationConfig(**kwargs)
    assert ev.GenerationConfig(temperature=0.0, greedy=True).generate_kwargs()["do_sample"] is False


def test_other_errors(tiny_llama, neurons, tmp_path):
    with pytest.raises(LangNeuronsError, match="language 'xx' is not in the corpus"):
        ev.nll_per_language(tiny_llama, SENTENCES, languages=["xx"], progress=False)
    with pytest.raises(LangNeuronsError, match="language 'fr' is not in the neuron set"):
        ev.perplexity_matrix(tiny_llama, SENTENCES, neurons, ablated=["fr"], progress=False)
    with pytest.raises(LangNeuronsError, match="neurons must be a LanguageNeurons"):
        ev.perplexity_matrix(tiny_llama, SENTENCES, {0: [1]}, progress=False)
    with pytest.raises(LangNeuronsError, match="unknown target language 'fr'"):
        ev.lss(tiny_llama, neurons, ev.load_facts(), "en", "fr", mode="scale", progress=False)
    with pytest.raises(LangNeuronsError, match="source must be a language other than the target"):
        ev.lss(tiny_llama, neurons, ev.load_facts(), "de", "de", mode="scale", progress=False)
    with pytest.raises(LangNeuronsError, match="no facts file"):
        ev.load_facts(tmp_path / "missing.json")
    with pytest.raises(LangNeuronsError, match="not a steering frame"):
        ev.steer_summary(pd.DataFrame({"x": [1]}))


def test_load_mlama_from_a_local_copy(tmp_path):
    """The mLAMA layout (one config, a language column) read from local JSON: no network needed."""
    import json

    rows = [dict(language=lang, predicate_id="P36", sub_uri=s, obj_uri=o, sub_label=sl, obj_label=ol, template=t,
                 uuid=f"{s}-{lang}", lineid=i)
            for i, (lang, s, o, sl, ol, t) in enumerate([
                ("en", "Q159", "Q649", "Russia", "Moscow", "The capital of [X] is [Y] ."),
                ("de", "Q159", "Q649", "Russland", "Moskau", "Die Hauptstadt von [X] ist [Y]."),
                ("en", "Q142", "Q90", "France", "Paris", "[Y] is the capital of [X] ."),  # not completable
                ("de", "Q142", "Q90", "Frankreich", "Paris", "Die Hauptstadt von [X] ist [Y]."),
                ("en", "Q183", "Q64", "Germany", "Berlin", "The capital of [X] is [Y] ."),  # no German row
            ])]
    (tmp_path / "mlama.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    items = ev.load_mlama(["en", "de"], name=str(tmp_path), config=None)
    assert items == [{"id": "P36:Q159:Q649", "relation": "P36",
                      "prompt": {"en": "The capital of Russia is", "de": "Die Hauptstadt von Russland ist"},
                      "object": {"en": "Moscow", "de": "Moskau"}}]
    with pytest.raises(LangNeuronsError, match="at least two languages"):
        ev.load_mlama(["en"], name=str(tmp_path), config=None)


def test_generation_matches_hugging_face(builtin_model):
    """Greedy continuations through the package (left-padded batch, token ids in, continuation
    out) equal a fresh Hugging Face model's own ``generate`` on each prompt alone. This is the
    oracle that caught TransformerLens 4.3's KV-cached bridge generation going wrong on Llama
    (the built-in model's text degenerated into "SA....."), so it runs on the trained model,
    whose next token depends on every position, not on a random tiny one."""
    from transformers import AutoModelForCausalLM

    from tl_langneurons.sources import builtin_model_path

    hf = AutoModelForCausalLM.from_pretrained(builtin_model_path(), dtype=torch.float32).eval()
    assert_greedy_is_hugging_face(builtin_model, hf, ["", "Die Datei wird", "Выберите ячейки, которые", "选择"],
                                  max_new_tokens=12)


def test_generation_warns_of_no_deprecation_and_equals_hugging_face(builtin_model):
    """No FutureWarning/DeprecationWarning from transformers reaches the user from generation,
    through the package (the wrapped model's ``generate``) or TransformerLens's own cached
    ``model.generate`` (which passed the cache as ``past_key_values``, deprecated since
    transformers 5.24 and removed in 5.40: :mod:`tl_langneurons.compat`); and the bridge's cached
    generation still equals a fresh Hugging Face model's own."""
    import warnings

    from transformers import AutoModelForCausalLM

    from tl_langneurons.sources import builtin_model_path

    hf = AutoModelForCausalLM.from_pretrained(builtin_model_path(), dtype=torch.float32).eval()
    tok = builtin_model.tokenizer
    ids = torch.tensor([encode(tok, "Die Datei wird")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ev.steer_with(builtin_model, "de", [Intervention({0: [0]}, "scale", factor=1.0)], prompts=["Die"],
                             generation=ev.GenerationConfig(max_new_tokens=4), progress=False)
        with torch.no_grad():
            bridge = builtin_model.generate(ids, max_new_tokens=8, do_sample=False, stop_at_eos=False,
                                            verbose=False, return_type="tokens", use_past_kv_cache=True)
    deprecations = [f"{w.category.__name__}: {w.message}" for w in caught
                    if issubclass(w.category, (FutureWarning, DeprecationWarning))
                    and ("transformers" in w.filename or "past_key_values" in str(w.message)
                         or "torch/nn/modules" in w.filename)]
    assert not deprecations and set(ours.condition) == {"baseline", "intervention"}
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                          min_new_tokens=8, pad_token_id=tok.pad_token_id)
    assert torch.equal(bridge.cpu(), ref)


def test_diffmean_sweep(tiny_llama):
    """Residual diffmean steering measured like neuron steering: β = 0 changes nothing; the
    control is a random direction of the same norm; the frame has steer_sweep's columns and the
    baseline is generated once per target; the direction is diffmean's."""
    from tl_langneurons.intervene import diffmean

    kw = dict(prompts=["", "Die Katze"], n_samples=2, generation=ev.GenerationConfig(max_new_tokens=5), progress=False)
    df = ev.diffmean_sweep(tiny_llama, SENTENCES, ["de", "ru"], 1, [0.0, 50.0], **kw)
    assert len(df) == 2 * 2 * 3 * 4 and set(df["mode"]) == {"diffmean"} and set(df.layer) == {1}
    assert list(df.columns[:6]) == ["target", "condition", "mode", "factor", "statistic", "positions"]
    zero = df[df.factor == 0.0]
    for t, g in zero.groupby("target"):
        gens = {c: list(x.generation) for c, x in g.groupby("condition")}
        assert gens["intervention"] == gens["baseline"] == gens["control"]  # β = 0: nothing moves
    base = df[df.condition == "baseline"]
    assert (base.groupby(["target", "prompt_id", "sample"]).generation.nunique() == 1).all()
    strong = df[(df.factor == 50.0) & (df.condition == "intervention")]
    assert list(strong.generation) != list(df[(df.factor == 50.0) & (df.condition == "baseline")].generation)
    s = ev.steer_summary(df)
    assert len(s) == 4 and {"target_rate", "baseline_rate", "control_rate"} <= set(s.columns)

    d = diffmean(tiny_llama, SENTENCES, "de", 1, progress=False)
    r = ev.random_direction_like(d, seed=3)
    assert r.layer == d.layer and r.target == "de"
    assert float(r.direction.norm()) == pytest.approx(float(d.direction.norm()), rel=1e-5)
    assert abs(float(torch.nn.functional.cosine_similarity(r.direction, d.direction, dim=0))) < 0.5
    assert torch.equal(ev.random_direction_like(d, seed=3).direction, r.direction)
    with pytest.raises(LangNeuronsError, match="'xx'"):
        ev.diffmean_sweep(tiny_llama, SENTENCES, ["xx"], 1, [1.0], **kw)


def test_generation_last_means_what_the_cached_run_means(tiny_llama):
    """Without a KV cache, ``positions="last"`` is mapped to the positions P−1 … P+n−1: the same
    tokens as KV-cached generation under ``last`` (correct with the pinned transformers), where
    the last prompt token and then each new token are intervened as they are produced."""
    layers = {l: list(range(0, 48, 3)) for l in range(3)}
    items = [Intervention(layers, "set", value=8.0)]
    prompt = encode(tiny_llama.tokenizer, "Die Katze schläft")
    gen = ev.GenerationConfig(max_new_tokens=6, greedy=True, stop_at_eos=False)
    got = generate(tiny_llama, [prompt], items, "last", gen, 8, 0, "t", False)
    x = torch.tensor([prompt])
    with torch.no_grad(), intervene(tiny_llama, items, positions="last"):
        cached = tiny_llama.generate(x, max_new_tokens=6, do_sample=False, stop_at_eos=False, verbose=False,
                                     return_type="tokens", use_past_kv_cache=True)
    want = tiny_llama.tokenizer.decode(cached[0, len(prompt):].tolist(), skip_special_tokens=True).strip()
    plain = generate(tiny_llama, [prompt], [], "all", gen, 8, 0, "t", False)
    assert got == [want] and got != plain  # the intervention matters, and "last" means the same
