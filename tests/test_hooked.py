"""The TransformerLens 3.x back end: ``load_model`` builds a ``HookedTransformer`` from the Hugging
Face weights (raw) where TL 3.x is installed, and it gives what the bridge gives.

The agreement test needs both back ends, which cannot share an environment (both are the
``transformer_lens`` package): run under TL 3.9 with ``TL_LANGNEURONS_BRIDGE_PYTHON`` naming the
python of an environment with TL ≥ 4.3, it runs ``tests/backend_probe.py`` there and compares
with the same computation here. ``.ci/run`` does exactly this; elsewhere the test is skipped.
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, MistralConfig

from tl_langneurons import LangNeuronsError
from tl_langneurons.evaluate import GenerationConfig
from tl_langneurons.evaluate.generation import generate_tokens
from tl_langneurons.hooked import config_dict
from tl_langneurons.models import backend, fingerprint, is_hooked

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_PYTHON = "TL_LANGNEURONS_BRIDGE_PYTHON"
hooked_only = pytest.mark.skipif(backend() != "hooked", reason="needs TransformerLens 3.x (HookedTransformer); "
                                 "this environment has the TransformerBridge")


def test_load_model_follows_the_installed_transformer_lens(builtin_model):
    major = int(importlib.metadata.version("transformer-lens").split(".")[0])
    assert backend() == ("hooked" if major < 4 else "bridge")
    assert is_hooked(builtin_model) == (backend() == "hooked")
    assert type(builtin_model).__name__ == ("HookedTransformer" if major < 4 else "TransformerBridge")
    fp = fingerprint(builtin_model)
    assert (fp["name"], fp["architecture"], fp["n_layers"], fp["d_mlp"], fp["gated"]) == \
        ("builtin", "LlamaForCausalLM", 6, 1792, True)
    assert builtin_model.tokenizer is not None and str(builtin_model.cfg.device) == "cpu"


@pytest.mark.parametrize("config, match", [
    (MistralConfig(architectures=["MistralForCausalLM"]),
     r"architecture 'MistralForCausalLM' is not supported .*allowed: .*'LlamaForCausalLM'"),
    (LlamaConfig(architectures=["LlamaForCausalLM"], attention_bias=True), r"attention_bias=True .*allowed: attention_bias=False"),
    (LlamaConfig(architectures=["LlamaForCausalLM"], rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
     r"rope_type 'yarn' .*allowed: .*'llama3'"),
    (GPT2Config(architectures=["GPT2LMHeadModel"], reorder_and_upcast_attn=True), r"reorder_and_upcast_attn=True"),
])
def test_unsupported_configurations_are_refused_by_name(config, match):
    with pytest.raises(LangNeuronsError, match=match):
        config_dict(config)


def test_config_is_read_from_the_hugging_face_config():
    cfg = config_dict(LlamaConfig(architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=96,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                  vocab_size=100, max_position_embeddings=77, rms_norm_eps=1e-6, hidden_act="silu",
                                  rope_parameters={"rope_type": "default", "rope_theta": 5e5}))
    assert (cfg["d_model"], cfg["d_mlp"], cfg["d_head"], cfg["n_key_value_heads"], cfg["n_ctx"], cfg["rotary_base"]) == \
        (64, 96, 32, 2, 77, 5e5)
    assert cfg["gated_mlp"] and cfg["normalization_type"] == "RMS" and cfg["act_fn"] == "silu"
    gpt2 = config_dict(GPT2Config(architectures=["GPT2LMHeadModel"], n_embd=32, n_inner=64, n_head=4))
    assert gpt2["d_mlp"] == 64 and not gpt2.get("gated_mlp") and gpt2["normalization_type"] == "LN"


@hooked_only
def test_repetition_penalty_is_refused_on_a_hooked_transformer(builtin_model):
    tokens, mask = torch.tensor([[1, 50, 60]]), torch.ones(1, 3, dtype=torch.int64)
    with pytest.raises(LangNeuronsError, match="repetition_penalty=1.3 needs the TransformerBridge"):
        generate_tokens(builtin_model, tokens, mask, GenerationConfig(repetition_penalty=1.3))


@hooked_only
def test_a_mask_the_hooked_transformer_would_not_infer_is_refused(builtin_model):
    """HookedTransformer.generate takes no mask: it treats leading pad tokens as padding. A real
    leading token equal to the pad id (0 here) would silently be masked; refused instead."""
    pad = builtin_model.tokenizer.pad_token_id
    tokens, mask = torch.tensor([[pad, 50, 60]]), torch.ones(1, 3, dtype=torch.int64)
    with pytest.raises(LangNeuronsError, match="infers the attention mask from pad tokens"):
        generate_tokens(builtin_model, tokens, mask, GenerationConfig(greedy=True, max_new_tokens=2))
    left_padded = torch.tensor([[pad, pad, 1, 50], [1, 50, 60, 70]])
    ok = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = generate_tokens(builtin_model, left_padded, ok, GenerationConfig(greedy=True, max_new_tokens=2,
                                                                           stop_at_eos=False))
    assert out.shape == (2, 6) and torch.equal(out[:, :4], left_padded)


def _near_zero(model, texts: list[str], layer: int, neuron: int, eps: float) -> int:
    """How many counted tokens of ``texts`` have ``|gate x| <= eps`` at ``(layer, neuron)``: tokens
    whose sign at ``act`` (φ(z) > 0 ⇔ z > 0) float rounding may decide."""
    from tl_langneurons.tokens import prepare_batches

    got = []
    for b in prepare_batches(model.tokenizer, {"x": texts}, 8, 512).batches:
        keep = lambda a, hook, b=b: got.append(a[..., neuron][b.counted.to(a.device)].abs())  # noqa: E731
        with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_pre", keep)]):
            model(b.tokens, attention_mask=b.attention_mask, return_type=None)
    return int((torch.cat(got) <= eps).sum())


@hooked_only
def test_hooked_transformer_agrees_with_the_bridge(builtin_model, tmp_path):
    """Activation probabilities (4 languages × 20 sentences of the built-in ``stats`` split, at
    ``act``) and every sentence's mean NLL, by the bridge in its own environment and by the
    HookedTransformer here. Tolerances are **absolute** (the values are in [0, 1], or a few nats):

    * sentence NLL: within 1e-4, every sentence;
    * activation probability p = count(a > 0) / N: within 1e-4, except where a token's
      pre-activation lies within 1e-5 of zero, so that float rounding (the two back ends compute
      attention and RMS norm in different orders) decides its sign; there p may differ by
      exactly those tokens (each moves p by 1/N ≈ 1e-3, so 1e-4 alone would demand bitwise-equal
      arithmetic), and at most 20 of the 43,008 entries may differ at all.

    The maximum differences are printed (``pytest -s``).
    """
    python = os.environ.get(BRIDGE_PYTHON)
    if not python:
        pytest.skip(f"set {BRIDGE_PYTHON} to the python of an environment with transformer-lens>=4.3")
    from safetensors import safe_open

    sys.path.insert(0, str(Path(__file__).parent))
    from backend_probe import LANGUAGES, N_SENTENCES, compute

    from tl_langneurons import load_corpus

    out = tmp_path / "bridge.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([python, str(ROOT / "tests" / "backend_probe.py"), str(out)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        theirs = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["backend"] == "bridge" and int(meta["transformer_lens"].split(".")[0]) >= 4, meta
    assert Path(meta["package"]).resolve().is_relative_to(ROOT), meta  # this checkout's package, not another
    mine = compute(builtin_model)
    versions = f"TL {meta['transformer_lens']} bridge vs TL {importlib.metadata.version('transformer-lens')}"
    for key in ("activation_probability", "sentence_nll"):
        diff = (mine[key] - theirs[key]).abs()
        rel = float((diff / theirs[key].abs().clamp_min(1e-12)).max())
        print(f"{key}: max abs diff {float(diff.max()):.3g}, max rel diff {rel:.3g}, "
              f"{int((diff > 1e-4).sum())} of {diff.numel()} entries beyond 1e-4 ({versions})")
    nll_a, nll_b = mine["sentence_nll"], theirs["sentence_nll"]
    assert nll_a.shape == nll_b.shape == (4 * N_SENTENCES,) and float(nll_a.min()) > 0
    assert float((nll_a - nll_b).abs().max()) <= 1e-4
    p, q = mine["activation_probability"], theirs["activation_probability"]
    assert p.shape == q.shape == (4, 6, 1792) and 0.05 < float(p.mean()) < 0.95  # a real measurement
    off = ((p - q).abs() > 1e-4).nonzero().tolist()
    assert len(off) <= 20, f"{len(off)} activation probabilities differ beyond 1e-4"
    corpus = load_corpus("builtin", languages=LANGUAGES, split="stats", max_sentences=N_SENTENCES)
    for k, layer, j in off:
        texts = corpus[LANGUAGES[k]]
        n = sum(len(builtin_model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        flips = round(abs(float(p[k, layer, j] - q[k, layer, j])) * n)
        near = _near_zero(builtin_model, texts, layer, j, 1e-5)
        print(f"  {LANGUAGES[k]} layer {layer} neuron {j}: {flips} token(s) of {n} differ; "
              f"{near} within 1e-5 of zero")
        assert 1 <= flips <= near, (k, layer, j)
