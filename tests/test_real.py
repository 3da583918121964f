"""The real pretrained model, Gemma 3 270M (262,144-token vocabulary, gated GELU-tanh MLP, scaled
embeddings, sliding-window attention): every site equals the Hugging Face module's own activations,
NLL equals Hugging Face's, interventions at post write v · up, generation is the Hugging Face
model's own, cached equals uncached. One model is shared by the tier (`pytest -m real`)."""

import pytest
import torch
from conftest import SENTENCES, assert_greedy_is_hugging_face, n_hooks

from tl_langneurons import Intervention, intervene, record
from tl_langneurons import evaluate as ev
from tl_langneurons.evaluate.generation import generate
from tl_langneurons.evaluate.scoring import token_nll
from tl_langneurons.models import activation_fn, is_gated
from tl_langneurons.tokens import encode, prepare_batches

pytestmark = pytest.mark.real
TEXTS = {k: SENTENCES[k][:2] for k in ("en", "de", "ja")}


def hf_sites(hf, tok, text: str) -> dict[str, torch.Tensor]:
    """``[pos, layer, d_mlp]`` at each site from plain PyTorch hooks on the HF MLP modules."""
    layers = hf.model.layers
    got = {"pre": [None] * len(layers), "up": [None] * len(layers), "post": [None] * len(layers)}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.mlp.gate_proj.register_forward_hook(lambda m, a, o, i=i: got["pre"].__setitem__(i, o[0])))
        handles.append(layer.mlp.up_proj.register_forward_hook(lambda m, a, o, i=i: got["up"].__setitem__(i, o[0])))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: got["post"].__setitem__(i, a[0][0])))
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor([encode(tok, text)]))
    finally:
        for h in handles:
            h.remove()
    out = {k: torch.stack(v, dim=1) for k, v in got.items()}
    out["act"] = torch.nn.functional.gelu(out["pre"], approximate="tanh")
    return out


def test_gemma_is_what_the_issue_says(gemma):
    assert (gemma.cfg.n_layers, gemma.cfg.d_mlp, gemma.cfg.d_vocab) == (18, 2048, 262144)
    assert is_gated(gemma)
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(activation_fn(gemma)(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)


@pytest.mark.parametrize("site", ["act", "pre", "post"])
def test_every_site_equals_hugging_face(gemma, gemma_hf, site):
    text = SENTENCES["de"][0]
    want = hf_sites(gemma_hf, gemma.tokenizer, text)[site][1:].double()  # BOS never counts
    stats = record(gemma, {"de": [text]}, site=site, batch_size=1, progress=False)
    assert stats.n_tokens[0] == want.shape[0]
    assert torch.allclose(stats.sum[0], want.sum(0), rtol=1e-4, atol=1e-4)
    assert torch.allclose(stats.sum_sq[0], (want * want).sum(0), rtol=1e-4, atol=1e-3)


def test_nll_equals_hugging_face_and_chunking_changes_nothing(gemma, gemma_hf, monkeypatch):
    df = ev.nll_per_language(gemma, TEXTS, batch_size=3, progress=False).set_index("language")
    for lang, sents in TEXTS.items():
        total, n = 0.0, 0
        for s in sents:
            ids = torch.tensor([encode(gemma.tokenizer, s)])
            with torch.no_grad():
                lp = gemma_hf(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
            total -= float(lp.gather(1, ids[0, 1:, None]).sum())
            n += ids.shape[1] - 1
        assert df.loc[lang, "nll"] == pytest.approx(total / n, abs=1e-4), lang
    b = prepare_batches(gemma.tokenizer, TEXTS, 6, 512).batches[0]
    whole = token_nll(gemma, b.tokens, b.attention_mask)
    import tl_langneurons.evaluate.scoring as scoring

    monkeypatch.setattr(scoring, "CE_CHUNK_ELEMENTS", 262144 * 6 * 2)  # two positions per chunk
    assert torch.equal(token_nll(gemma, b.tokens, b.attention_mask), whole)
    monkeypatch.setattr(scoring, "LOGITS_BUDGET_BYTES", 1)  # one row per forward pass
    per_row = token_nll(gemma, b.tokens, b.attention_mask)
    counted = b.counted[:, 1:]
    assert torch.allclose(per_row[counted], whole[counted], atol=1e-4)


def test_set_at_act_writes_v_times_up_at_post(gemma, gemma_hf):
    """docs/methods.md#sites: φ(gate) := v at a gated MLP means post := v · up; the rest of post is untouched."""
    layer, idx, v = 7, [3, 100, 2047], 2.5
    text = SENTENCES["en"][1]
    clean = hf_sites(gemma_hf, gemma.tokenizer, text)
    seen = {}
    with intervene(gemma, {layer: idx}, "set", value=v, site="act"), \
            gemma.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", lambda a, hook: seen.__setitem__("post", a[0]))]):
        with torch.no_grad():
            gemma(torch.tensor([encode(gemma.tokenizer, text)]), return_type=None)
    want = clean["post"][:, layer].clone()
    want[:, idx] = v * clean["up"][:, layer][:, idx]
    assert torch.allclose(seen["post"], want, atol=1e-4)
    assert n_hooks(gemma) == 0


PROMPTS = ["", "Die Katze schläft auf der", "東京は日本の"]


def test_greedy_generation_is_hugging_face_generate(gemma, gemma_hf):
    assert_greedy_is_hugging_face(gemma, gemma_hf, PROMPTS, max_new_tokens=10)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", "last"])
def test_cached_generation_equals_uncached_under_an_intervention(gemma, positions):
    """The KV-cached path (Hugging Face's generate inside the bridge) against the bridge's own
    generation that recomputes the whole sequence each step, with the positions an uncached run
    needs for the same meaning (``last`` = the last prompt token, then each new one)."""
    items = [Intervention({l: list(range(0, 2048, 64)) for l in (2, 9, 16)}, "set", value=6.0)]
    prompt = encode(gemma.tokenizer, "The weather today is")
    cfg = ev.GenerationConfig(max_new_tokens=8, greedy=True, stop_at_eos=False)
    cached = generate(gemma, [prompt], items, positions, cfg, 4, 0, progress=False)
    P, n = len(prompt), cfg.max_new_tokens
    uncached_positions = tuple(range(P - 1, P + n)) if positions == "last" else positions
    x = torch.tensor([prompt])
    with torch.no_grad(), intervene(gemma, items, positions=uncached_positions):
        seq = gemma.generate(x, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False,
                             return_type="tokens", use_past_kv_cache=False)
    want = gemma.tokenizer.decode(seq[0, P:].tolist(), skip_special_tokens=True).strip()
    plain = generate(gemma, [prompt], [], "all", cfg, 4, 0, progress=False)
    assert cached == [want]
    if positions != "prompt":  # the intervention reaches the generated tokens
        assert cached != plain
    assert n_hooks(gemma) == 0
