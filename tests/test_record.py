"""The recorder against oracles: a naive computation with plain PyTorch hooks on the Hugging Face
weights, invariances (batch size, order, padding), site relations, files, and hook hygiene."""

import os

import pytest
import torch
from conftest import SENTENCES, n_hooks

from tl_langneurons import LangNeuronsError, NeuronStats, record
from tl_langneurons.corpus import Corpus
from tl_langneurons.record import Accumulator


def naive_site_activations(model_dir: str, texts: dict[str, list[str]], site: str) -> dict[str, torch.Tensor]:
    """Per language, the concatenated ``[tokens, layer, d_mlp]`` activations at ``site``, computed
    with plain PyTorch forward hooks on the HF modules, one unpadded sentence at a time, BOS dropped."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if hasattr(hf, "model"):  # Llama: site act = silu(gate_proj x), pre = gate_proj x, post = input of down_proj
        layers = hf.model.layers
        mods = {"act": lambda m: m.mlp.gate_proj, "pre": lambda m: m.mlp.gate_proj, "post": lambda m: m.mlp.down_proj}
    else:  # GPT-2: act = post = output of the activation, pre = c_fc output
        layers = hf.transformer.h
        mods = {"act": lambda m: m.mlp.act, "pre": lambda m: m.mlp.c_fc, "post": lambda m: m.mlp.act}
    out = {}
    for lang, sents in texts.items():
        rows = []
        for s in sents:
            captured = [None] * len(layers)
            handles = []
            for i, layer in enumerate(layers):
                mod = mods[site](layer)
                if site == "post" and hasattr(hf, "model"):
                    handles.append(mod.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0])))
                else:
                    handles.append(mod.register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(i, o)))
            ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False).input_ids])
            with torch.no_grad():
                hf(input_ids=ids)
            for h in handles:
                h.remove()
            acts = torch.stack([c[0] for c in captured], dim=1)  # [pos, layer, d_mlp]
            if site == "act" and hasattr(hf, "model"):
                acts = torch.nn.functional.silu(acts)
            rows.append(acts[1:])  # drop BOS
        out[lang] = torch.cat(rows).double()
    return out


@pytest.mark.parametrize("site", ["act", "pre", "post"])
def test_stats_equal_naive_computation_llama(tiny_llama, tiny_llama_dir, site):
    stats = record(tiny_llama, SENTENCES, site=site, batch_size=3, progress=False)
    naive = naive_site_activations(tiny_llama_dir, SENTENCES, site)
    for k, lang in enumerate(stats.languages):
        a = naive[lang]
        assert stats.n_tokens[k] == a.shape[0]
        assert torch.allclose(stats.count_pos[k], (a > 0).sum(0).double(), atol=1.0)  # a value at 0 may flip
        assert torch.allclose(stats.activation_probability()[k], (a > 0).double().mean(0), atol=1e-3)
        assert torch.allclose(stats.sum[k], a.sum(0), rtol=1e-4, atol=1e-4)
        assert torch.allclose(stats.sum_sq[k], (a * a).sum(0), rtol=1e-4, atol=1e-4)


def test_stats_equal_naive_computation_gpt2(tiny_gpt2, tiny_gpt2_dir):
    stats = record(tiny_gpt2, SENTENCES, site="act", batch_size=4, progress=False)
    naive = naive_site_activations(tiny_gpt2_dir, SENTENCES, "act")
    for k, lang in enumerate(stats.languages):
        assert stats.n_tokens[k] == naive[lang].shape[0]
        assert torch.allclose(stats.mean()[k], naive[lang].mean(0), rtol=1e-4, atol=1e-5)


def test_sentence_means_and_histogram_quantiles_match_naive(tiny_llama, tiny_llama_dir):
    edges = torch.linspace(-1, 1, 2001)
    stats = record(tiny_llama, SENTENCES, batch_size=3, sentence_means=True, histogram_edges=edges, progress=False)
    naive = naive_site_activations(tiny_llama_dir, {"de": SENTENCES["de"][:1]}, "act")["de"]
    k = stats.index("de")
    first_de = (stats.sentence_language == k).nonzero()[0, 0]
    assert torch.allclose(stats.sentence_means[first_de].double(), naive.mean(0), atol=1e-5)
    # Quantiles from the histogram are within one bin width (0.001) of the exact ones.
    full = naive_site_activations(tiny_llama_dir, SENTENCES, "act")["de"]
    exact = torch.quantile(full, 0.5, dim=0, interpolation="lower")
    assert (stats.median()[k] - exact).abs().max() <= 2e-3
    assert stats.hist[k].sum(-1).eq(stats.n_tokens[k]).all()


def test_invariant_to_batch_size_and_language_order(tiny_llama):
    a = record(tiny_llama, SENTENCES, batch_size=1, progress=False)
    b = record(tiny_llama, SENTENCES, batch_size=16, progress=False)
    reordered = {k: SENTENCES[k][::-1] for k in reversed(list(SENTENCES))}
    c = record(tiny_llama, reordered, batch_size=3, progress=False).select(a.languages)
    for other in (b, c):
        assert torch.equal(a.n_tokens, other.n_tokens)
        assert torch.allclose(a.count_pos, other.count_pos, atol=1.0)
        assert torch.allclose(a.sum, other.sum, rtol=1e-5, atol=1e-5)


def test_padding_and_bos_excluded(tiny_llama, tokenizer):
    stats = record(tiny_llama, SENTENCES, batch_size=4, progress=False)
    for k, lang in enumerate(stats.languages):
        expected = sum(len(tokenizer(s, add_special_tokens=False).input_ids) for s in SENTENCES[lang])
        assert stats.n_tokens[k] == expected
    # A sentence alone or padded next to a much longer one gives the same statistics.
    short = {"en": ["Hi."], "de": ["Hallo."]}
    alone = record(tiny_llama, short, batch_size=1, progress=False)
    padded = record(tiny_llama, {"en": ["Hi.", "x " * 100], "de": ["Hallo."]}, batch_size=2, progress=False)
    long_only = record(tiny_llama, {"en": ["x " * 100], "de": ["Hallo."]}, batch_size=2, progress=False)
    assert torch.allclose(padded.sum[0] - long_only.sum[0], alone.sum[0], atol=1e-4)


def test_act_and_pre_probabilities_equal_and_post_is_act_times_up(tiny_llama):
    act = record(tiny_llama, SENTENCES, site="act", progress=False)
    pre = record(tiny_llama, SENTENCES, site="pre", progress=False)
    assert torch.allclose(act.activation_probability(), pre.activation_probability(), atol=1e-12)
    assert not torch.allclose(act.mean(), pre.mean())
    seen = {}
    hooks = [(f"blocks.1.mlp.{n}", lambda t, hook, n=n: seen.__setitem__(n, t.clone())) for n in
             ("hook_pre", "hook_pre_linear", "hook_post")]
    ids = torch.tensor([[1, 200, 300, 400]])
    with torch.no_grad(), tiny_llama.hooks(fwd_hooks=hooks):
        tiny_llama(ids, return_type=None)
    assert torch.allclose(seen["hook_post"], torch.nn.functional.silu(seen["hook_pre"]) * seen["hook_pre_linear"], atol=1e-6)


def test_save_load_round_trip_and_merge(tiny_llama, tmp_path):
    full = record(tiny_llama, SENTENCES, sentence_means=True, histogram_edges=True, progress=False)
    full.save(tmp_path / "s")
    back = NeuronStats.load(tmp_path / "s")
    for name, t in full.tensors().items():
        assert torch.equal(t, back.tensors()[name]), name
    assert back.languages == full.languages and back.site == full.site
    assert back.meta["model"] == full.meta["model"]
    halves = [{k: v[:2] for k, v in SENTENCES.items()}, {k: v[2:] for k, v in SENTENCES.items()}]
    a, b = (record(tiny_llama, h, sentence_means=True, progress=False) for h in halves)
    merged = a.merge(b)
    assert torch.equal(merged.n_tokens, full.n_tokens)
    assert torch.allclose(merged.sum, full.sum, rtol=1e-5, atol=1e-5)
    assert merged.sentence_means.shape == full.sentence_means.shape


def test_load_detects_torn_write(tiny_llama, tmp_path):
    stats = record(tiny_llama, {"en": SENTENCES["en"]}, progress=False)
    stats.save(tmp_path)
    (tmp_path / "stats.safetensors").write_bytes(b"garbage")
    with pytest.raises(LangNeuronsError, match="does not match"):
        NeuronStats.load(tmp_path)
    with pytest.raises(LangNeuronsError, match="no statistics"):
        NeuronStats.load(tmp_path / "missing")


def test_merge_refuses_other_site_or_model(tiny_llama, tiny_gpt2):
    a = record(tiny_llama, {"en": SENTENCES["en"]}, site="act", progress=False)
    b = record(tiny_llama, {"en": SENTENCES["en"]}, site="pre", progress=False)
    c = record(tiny_gpt2, {"en": SENTENCES["en"]}, site="act", progress=False)
    with pytest.raises(LangNeuronsError, match="different sites"):
        a.merge(b)
    with pytest.raises(LangNeuronsError, match="different models"):
        a.merge(c)


def test_no_hook_left_after_exception(tiny_llama, monkeypatch):
    calls = {"n": 0}
    original = Accumulator.start_batch

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(self, batch)

    monkeypatch.setattr(Accumulator, "start_batch", failing)
    with pytest.raises(RuntimeError, match="boom"):
        record(tiny_llama, SENTENCES, batch_size=1, progress=False)
    assert n_hooks(tiny_llama) == 0
    monkeypatch.undo()
    record(tiny_llama, {"en": SENTENCES["en"]}, progress=False)
    assert n_hooks(tiny_llama) == 0


def test_resume_from_checkpoint_is_identical(tiny_llama, tmp_path, monkeypatch):
    texts = {k: v * 3 for k, v in SENTENCES.items()}
    reference = record(tiny_llama, texts, batch_size=2, sentence_means=True, progress=False)
    calls = {"n": 0}
    original = Accumulator.start_batch

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Accumulator, "start_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        record(tiny_llama, texts, batch_size=2, sentence_means=True, checkpoint_dir=tmp_path, checkpoint_every=4,
               progress=False)
    monkeypatch.undo()
    assert (tmp_path / "rank0.checkpoint.safetensors").is_file()
    resumed = record(tiny_llama, texts, batch_size=2, sentence_means=True, checkpoint_dir=tmp_path,
                     checkpoint_every=4, resume=True, progress=False)
    for name, t in reference.tensors().items():
        assert torch.equal(t, resumed.tensors()[name]), name
    # A checkpoint from other options is refused, not silently mixed in.
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(Accumulator, "start_batch", dies)
        calls["n"] = 0
        record(tiny_llama, texts, batch_size=2, checkpoint_dir=tmp_path, checkpoint_every=4, progress=False)
    monkeypatch.undo()
    with pytest.raises(LangNeuronsError, match="different recording"):
        record(tiny_llama, texts, batch_size=3, checkpoint_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("die_after", [1, 2, 3, 5, 8])
def test_a_kill_around_a_checkpoint_write_never_double_counts(tiny_llama, tmp_path, monkeypatch, die_after):
    """The process dies right after its n-th file rename (a checkpoint landing on disk): resuming
    must give exactly the uninterrupted sums. A checkpoint written as two files (sums, then their
    batch count) double-counted here when the kill fell between the two."""
    texts = {k: v * 2 for k, v in SENTENCES.items()}
    reference = record(tiny_llama, texts, batch_size=2, progress=False)
    real_replace, calls = os.replace, {"n": 0}

    def replace_then_die(src, dst):
        real_replace(src, dst)
        calls["n"] += 1
        if calls["n"] == die_after:
            raise KeyboardInterrupt  # as if killed the moment the file landed

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        record(tiny_llama, texts, batch_size=2, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    monkeypatch.undo()
    resumed = record(tiny_llama, texts, batch_size=2, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True,
                     progress=False)
    for name, t in reference.tensors().items():
        assert torch.equal(t, resumed.tensors()[name]), name


def test_merge_refuses_when_only_one_side_has_sentence_means_or_histograms(tiny_llama):
    plain = record(tiny_llama, {"en": SENTENCES["en"]}, progress=False)
    means = record(tiny_llama, {"de": SENTENCES["de"]}, sentence_means=True, progress=False)
    hist = record(tiny_llama, {"de": SENTENCES["de"]}, histogram_edges=True, progress=False)
    with pytest.raises(LangNeuronsError, match="only the second statistics hold sentence_means"):
        plain.merge(means)
    with pytest.raises(LangNeuronsError, match="only the first statistics hold hist"):
        hist.merge(plain)
    both = means.merge(record(tiny_llama, {"en": SENTENCES["en"]}, sentence_means=True, progress=False))
    assert both.sentence_means.shape[0] == 8 and both.sentence_language.tolist() == [0] * 4 + [1] * 4


def test_packed_mode_counts_the_text_tokens_unpacked_mode_counts(tiny_llama, tokenizer):
    """Packing only adds BOS and EOS around the text; every token of the text itself — an unk or
    a special-looking one included — counts in both modes, so the totals agree exactly."""
    texts = {"en": SENTENCES["en"] + [tokenizer.unk_token or "<unk>", "a " + (tokenizer.eos_token or "</s>") + " b"]}
    packed = record(tiny_llama, texts, pack=16, progress=False)
    unpacked = record(tiny_llama, texts, progress=False)
    assert packed.n_tokens.tolist() == unpacked.n_tokens.tolist()


def test_packed_windows(tiny_llama, tokenizer):
    stats = record(tiny_llama, SENTENCES, pack=16, progress=False)
    expected = sum(len(tokenizer(s, add_special_tokens=False).input_ids) for s in SENTENCES["en"])
    assert stats.n_tokens[stats.index("en")] == expected  # EOS separators and BOS not counted
    assert stats.meta["options"]["pack"] == 16


@pytest.mark.parametrize("kwargs, match", [
    ({"site": "mlp"}, "unknown site"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_sentences": -1}, "max_sentences"),
    ({"pack": 1}, "pack"),
    ({"resume": True}, "checkpoint_dir"),
])
def test_bad_arguments(tiny_llama, kwargs, match):
    with pytest.raises(LangNeuronsError, match=match):
        record(tiny_llama, Corpus({"en": SENTENCES["en"]}), progress=False, **kwargs)
