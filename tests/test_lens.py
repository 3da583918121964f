"""The latent-language lens: oracles against the model's own output and Hugging Face's hidden states
put through the final norm and head by hand; the single-token filters; interventions; the command."""

import json

import pandas as pd
import pytest
import torch

from conftest import n_hooks
from tl_langneurons import LangNeuronsError
from tl_langneurons.lens import build_items, layer_log_probs, run_lens, soft_cap
from tl_langneurons.lens.items import cloze_sentences, word_table
from tl_langneurons.tokens import encode

PROMPTS = ["Hello there, world", "Die Katze schläft auf der warmen Fensterbank.", "猫は暖かい窓辺で眠っています。"]


def _batch(tok):
    from tl_langneurons.tokens import right_pad

    seqs = [encode(tok, p) for p in PROMPTS]
    tokens, mask = right_pad(seqs, tok.pad_token_id)
    return seqs, tokens, mask, torch.tensor([len(s) - 1 for s in seqs])


@pytest.fixture(scope="module")
def tiny_gemma3_capped(tmp_path_factory, tokenizer):
    """A Gemma 3 with a final logit soft cap small enough to change every distribution."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tl_langneurons import load_model

    torch.manual_seed(3)
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                           final_logit_softcapping=0.05, sliding_window=8, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    hf = Gemma3ForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("tiny_gemma3")
    hf.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return load_model(str(d)), hf


def _hf_oracle(hf, tokens, mask, last):
    """Hugging Face's hidden states through its final norm and lm_head by hand (the last one: its logits)."""
    with torch.no_grad():
        out = hf(tokens, attention_mask=mask, output_hidden_states=True)
        body = hf.model
        rows = torch.arange(tokens.shape[0])
        layers = []
        for h in out.hidden_states[:-1]:  # the last hidden state is already normed by HF
            logits = hf.lm_head(body.norm(h[rows, last]))
            cap = getattr(hf.config, "final_logit_softcapping", None)
            if cap:
                logits = cap * torch.tanh(logits / cap)
            layers.append(logits)
        layers.append(out.logits[rows, last])
    return torch.log_softmax(torch.stack(layers, 1).float(), -1)


@pytest.mark.parametrize("which", ["builtin", "gemma3_capped"])
def test_every_layer_equals_hugging_face_by_hand(which, builtin_model, tiny_gemma3_capped):
    if which == "builtin":
        from transformers import AutoModelForCausalLM

        from tl_langneurons.sources import builtin_model_path

        model = builtin_model
        hf = AutoModelForCausalLM.from_pretrained(builtin_model_path(), dtype=torch.float32).eval()
    else:
        model, hf = tiny_gemma3_capped
        assert soft_cap(model) == pytest.approx(0.05)
    seqs, tokens, mask, last = _batch(model.tokenizer)
    got = layer_log_probs(model, tokens, mask, last)
    assert got.shape == (len(PROMPTS), model.cfg.n_layers + 1, hf.config.vocab_size)
    want = _hf_oracle(hf, tokens, mask, last)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    # the last layer is the model's own output distribution (each prompt alone, no padding)
    for b, s in enumerate(seqs):
        with torch.no_grad():
            own = torch.log_softmax(model(torch.tensor([s]))[0, -1].float(), -1)
        torch.testing.assert_close(got[b, -1], own, atol=2e-5, rtol=1e-5)
    if which == "gemma3_capped":  # the cap matters here: without it the last layer would differ
        raw = torch.log_softmax(model.unembed(model.ln_final(torch.zeros(1, 32) + 1)).float(), -1)
        assert got[:, -1].max() - got[:, -1].min() < 0.11 < 0.3 < raw.max() - raw.min()
    assert n_hooks(model) == 0


def test_equals_transformer_lens_accumulated_resid(builtin_model):
    model = builtin_model
    _, tokens, mask, last = _batch(model.tokenizer)
    got = layer_log_probs(model, tokens[:1, :last[0] + 1], mask[:1, :last[0] + 1], last[:1])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:1, :last[0] + 1])
        acc = cache.accumulated_resid(apply_ln=True, pos_slice=-1)  # [L+1, 1, d]
        want = torch.log_softmax(model.unembed(acc[:, 0]).float(), -1)
    torch.testing.assert_close(got[0], want, atol=2e-5, rtol=1e-5)


def test_items_are_single_tokens_with_disjoint_english(tokenizer):
    items, counts = build_items(tokenizer, ["ja", "ko"])
    assert items, counts
    assert sum(c["kept"] for t in counts.values() for c in t.values()) == len(items)
    for it in items:
        head, full = encode(tokenizer, it.prompt), encode(tokenizer, it.prompt + it.target)
        assert full[:len(head)] == head and len(full) == len(head) + 1 and full[-1] == it.target_ids[0]
        eng = encode(tokenizer, it.prompt + it.english)
        assert len(eng) == len(head) + 1 and eng[-1] == it.english_ids[0]
        assert not set(it.target_ids) & set(it.english_ids)
        assert it.prompt.count("\n") >= 2  # few-shot examples precede the query
        if it.task == "cloze":
            assert "___" in it.prompt.split("\n\n")[-1] and it.target not in it.prompt.split("\n\n")[-1]
    # the word set: every word in every language, and the cloze sentences come from the parallel split
    assert all(set(w) == set(word_table()["languages"]) for w in word_table()["words"])
    for blanked, answer, english in cloze_sentences("ko")[:5]:
        assert "___" in blanked and answer not in blanked


def test_argument_errors(tokenizer):
    with pytest.raises(LangNeuronsError, match="English is the lens"):
        build_items(tokenizer, ["en"])
    with pytest.raises(LangNeuronsError, match="'xx' is not in the lens word set"):
        build_items(tokenizer, ["xx"])
    with pytest.raises(LangNeuronsError, match="unknown task 'story'"):
        build_items(tokenizer, ["zh"], ["story"])


def test_switching_off_neurons_moves_the_lens_and_leaves_no_hook(builtin_model):
    from tl_langneurons import LanguageNeurons

    model = builtin_model
    L, I = model.cfg.n_layers, model.cfg.d_mlp
    own = LanguageNeurons({"zh": [(l, j) for l in range(L) for j in range(0, I, 3)]}, "lape", {}, "act", {}, L, I)
    res = run_lens(model, ["zh", "ko"], ["cloze"], neurons=own, max_items=3, progress=False)
    s = res.summary
    assert set(s["condition"]) == {"baseline", "own_neurons_off", "random_neurons_off"}
    assert set(s[s["condition"] != "baseline"]["language"]) == {"zh"}  # ko has no neurons in the set
    base = s[(s.condition == "baseline") & (s.language == "zh")].set_index("layer")["p_target"]
    off = s[(s.condition == "own_neurons_off") & (s.language == "zh")].set_index("layer")["p_target"]
    assert base.iloc[0] == pytest.approx(off.iloc[0])  # layer 0 (embeddings) is before any neuron
    assert (base - off).abs().iloc[1:].max() > 1e-6
    assert n_hooks(model) == 0


def test_lens_command(tmp_path):
    from tl_langneurons.cli import main

    out = tmp_path / "lens"
    assert main(["lens", "--languages", "ko", "--tasks", "cloze", "--max-items", "2", "--out", str(out)]) == 0
    df = pd.read_csv(out / "lens.csv")
    assert {"task", "language", "layer", "p_target", "p_english"} <= set(df.columns)
    assert len(df) == 7  # layers 0..6, baseline only
    counts = json.loads((out / "summary.json").read_text())["counts"]
    assert counts["cloze"]["ko"]["kept"] == 2
    assert (out / "lens.png").is_file()
    assert main(["lens", "--languages", "en", "--out", str(tmp_path / "x")]) == 2
