"""Tiny random models of the seed papers' architectures, built offline from each family's own
transformers config class (no hub), for tests that must hold on every architecture.

Every dense model has 2 layers, ``d_model`` 32 and an MLP ``WIDTH`` of 48 — 1.5 × d_model, so a
width read from a 4 × d_model default is caught — except BLOOM, whose MLP transformers hard-codes
at 4 × hidden (128). They share the built-in model's tokenizer (real multilingual BPE, 8,192
tokens) and its special-token ids, and are saved as standard Hugging Face folders, so that
``load_model(folder)`` loads them exactly as it loads any local model.

``down_projection(hf, layer)`` names each family's MLP output projection, the module whose input
columns are the neurons: zeroing a neuron at ``act`` equals zeroing that column (tests use it as
the weight-edit oracle). ``activation_module(hf, layer)`` is the module whose output is the
``act`` site on a gated MLP (φ applied to the gate projection); ``hf_act`` reads every layer's
``act`` from Hugging Face's own modules by forward hooks (the recording oracle), and
``assert_counts_within_rounding`` compares activation counts up to sign flips of values near 0.
"""

from collections.abc import Callable
from pathlib import Path

import torch

D_MODEL, WIDTH, LAYERS = 32, 48, 2


def _common(tok, **extra) -> dict:
    return {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id, **extra}


def _decoder(tok, **extra) -> dict:
    """The Llama-style keyword set (Llama, Mistral, Qwen, Gemma, Cohere, OLMo 2, Phi-3)."""
    return _common(tok, hidden_size=D_MODEL, intermediate_size=WIDTH, num_hidden_layers=LAYERS,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **extra)


def _configs() -> dict[str, Callable]:
    import transformers as tf

    return {
        # name: tokenizer → (config, model class)
        "llama": lambda t: (tf.LlamaConfig(**_decoder(t)), tf.LlamaForCausalLM),
        "mistral": lambda t: (tf.MistralConfig(**_decoder(t, sliding_window=None)), tf.MistralForCausalLM),
        "qwen2": lambda t: (tf.Qwen2Config(**_decoder(t)), tf.Qwen2ForCausalLM),
        "qwen3": lambda t: (tf.Qwen3Config(**_decoder(t, head_dim=8)), tf.Qwen3ForCausalLM),
        "gemma2": lambda t: (tf.Gemma2Config(**_decoder(t, head_dim=8, sliding_window=64)), tf.Gemma2ForCausalLM),
        "gemma3": lambda t: (tf.Gemma3TextConfig(**_decoder(t, head_dim=8, sliding_window=64)),
                             tf.Gemma3ForCausalLM),
        "cohere": lambda t: (tf.CohereConfig(**_decoder(t)), tf.CohereForCausalLM),
        "olmo2": lambda t: (tf.Olmo2Config(**_decoder(t)), tf.Olmo2ForCausalLM),
        "phi3": lambda t: (tf.Phi3Config(**_decoder(t)), tf.Phi3ForCausalLM),
        "gpt2": lambda t: (tf.GPT2Config(**_common(t, n_embd=D_MODEL, n_inner=WIDTH, n_layer=LAYERS, n_head=4,
                                                    n_positions=256)), tf.GPT2LMHeadModel),
        "bloom": lambda t: (tf.BloomConfig(**_common(t, hidden_size=D_MODEL, n_layer=LAYERS, n_head=4)),
                            tf.BloomForCausalLM),
        "xglm": lambda t: (tf.XGLMConfig(**_common(t, d_model=D_MODEL, ffn_dim=WIDTH, num_layers=LAYERS,
                                                    attention_heads=4, max_position_embeddings=256)),
                           tf.XGLMForCausalLM),
        "opt": lambda t: (tf.OPTConfig(**_common(t, hidden_size=D_MODEL, ffn_dim=WIDTH, num_hidden_layers=LAYERS,
                                                  num_attention_heads=4, word_embed_proj_dim=D_MODEL,
                                                  max_position_embeddings=256)), tf.OPTForCausalLM),
        "gpt_neox": lambda t: (tf.GPTNeoXConfig(**_common(t, hidden_size=D_MODEL, intermediate_size=WIDTH,
                                                          num_hidden_layers=LAYERS, num_attention_heads=4,
                                                          max_position_embeddings=256)), tf.GPTNeoXForCausalLM),
    }


def _moe_configs() -> dict[str, Callable]:
    import transformers as tf

    experts = {"num_local_experts": 4, "num_experts_per_tok": 2}
    return {
        "mixtral": lambda t: (tf.MixtralConfig(**_decoder(t, **experts)), tf.MixtralForCausalLM),
        "qwen2_moe": lambda t: (tf.Qwen2MoeConfig(**_decoder(t, num_experts=4, num_experts_per_tok=2,
                                                             moe_intermediate_size=WIDTH,
                                                             shared_expert_intermediate_size=WIDTH)),
                                tf.Qwen2MoeForCausalLM),
        "olmoe": lambda t: (tf.OlmoeConfig(**_decoder(t, num_experts=4, num_experts_per_tok=2)), tf.OlmoeForCausalLM),
    }


DENSE = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "cohere", "olmo2", "phi3",
         "gpt2", "bloom", "xglm", "opt", "gpt_neox")
GATED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "cohere", "olmo2", "phi3")
MOE = ("mixtral", "qwen2_moe", "olmoe")


def hf_model(name: str, tokenizer, seed: int = 0):
    """A fresh random Hugging Face model of architecture ``name`` (float32, eval mode)."""
    table = {**_configs(), **_moe_configs()}
    if name not in table:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(table)}")
    config, cls = table[name](tokenizer)
    torch.manual_seed(seed)
    model = cls(config).eval()
    # random init leaves some families' norms at 1 and biases at 0; give every parameter a random
    # offset so that no check passes because a term happens to vanish
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def save(name: str, tokenizer, path: str | Path, seed: int = 0) -> str:
    """Build ``name`` and save it with the tokenizer as a Hugging Face folder; returns the folder."""
    model = hf_model(name, tokenizer, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def down_projection(hf, layer: int) -> torch.nn.Module:
    """The MLP output projection of ``layer``: its input features are the MLP's neurons."""
    block = _blocks(hf)[layer]
    for owner, attr in ((getattr(block, "mlp", None), "down_proj"), (getattr(block, "mlp", None), "c_proj"),
                        (getattr(block, "mlp", None), "dense_4h_to_h"), (block, "fc2")):
        if owner is not None and hasattr(owner, attr):
            return getattr(owner, attr)
    raise KeyError(f"no down projection in {type(block).__name__}")


def zero_neuron_columns(hf, layers: dict[int, list[int]]) -> None:
    """Zero the down projection's input columns of the given neurons, in place (the weight-edit
    oracle of zeroing at ``act``): ``nn.Linear`` stores ``[out, in]``, GPT-2's ``Conv1D`` ``[in, out]``."""
    with torch.no_grad():
        for layer, idx in layers.items():
            lin = down_projection(hf, layer)
            if type(lin).__name__ == "Conv1D":
                lin.weight[idx, :] = 0
            else:
                lin.weight[:, idx] = 0


def activation_module(hf, layer: int) -> torch.nn.Module:
    """The activation φ module of a gated MLP (its output is φ(gate x), the ``act`` site)."""
    mlp = _blocks(hf)[layer].mlp
    for attr in ("act_fn", "activation_fn"):
        if isinstance(getattr(mlp, attr, None), torch.nn.Module):
            return getattr(mlp, attr)
    raise KeyError(f"no activation module in {type(mlp).__name__}")


def _blocks(hf) -> torch.nn.ModuleList:
    base = hf.base_model
    base = getattr(base, "decoder", base)  # OPT keeps its layers in model.decoder
    for attr in ("layers", "h"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise KeyError(f"no layer list in {type(base).__name__}")


def hf_act(hf, name: str, ids: torch.Tensor, site: str = "act") -> list[torch.Tensor]:
    """Each layer's ``act`` (or ``post``) site ``[pos, width]`` of one sequence, from Hugging
    Face's own modules: ``act`` of a gated MLP is the output of its φ module; ``post``, and ``act``
    of a non-gated MLP, the down projection's input."""
    seen: list = [None] * LAYERS
    handles = []
    def grab(layer: int):
        def hook(module, args, out=None):  # a forward hook (out) or a forward pre-hook (args only)
            x = args[0] if out is None else out
            seen[layer] = x.reshape(-1, x.shape[-1])  # one sequence; OPT flattens batch and positions
        return hook

    for layer in range(LAYERS):
        if name in GATED and site == "act":
            handles.append(activation_module(hf, layer).register_forward_hook(grab(layer)))
        else:
            handles.append(down_projection(hf, layer).register_forward_pre_hook(grab(layer)))
    try:
        with torch.no_grad():
            hf(ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def assert_counts_within_rounding(count: torch.Tensor, values: torch.Tensor, tol: float) -> None:
    """``count`` (``[...]``) equals ``(values > 0).sum(0)`` (``values``: ``[n, ...]``) but for sign
    flips of values within ``tol`` of 0: each count differs by at most the number of such values."""
    exact = (values > 0).sum(0).to(count.dtype)
    near = (values.abs() <= tol).sum(0).to(count.dtype)
    bad = (count - exact).abs() > near
    assert not bool(bad.any()), f"{int(bad.sum())} counts differ beyond values within {tol} of 0"
