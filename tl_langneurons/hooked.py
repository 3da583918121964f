"""A TransformerLens 3.x ``HookedTransformer`` built offline from a local Hugging Face model.

TL 3.9's ``HookedTransformer.from_pretrained`` accepts only the names on its official list, so
:func:`build` does what it does for one of them, from the folder's own ``config.json``: fill a
``HookedTransformerConfig`` from the Hugging Face config (:func:`config_dict`), convert the
weights with TransformerLens's own converter for that architecture, and load them **raw** —
no layer-norm folding, no centring, no value-bias folding — the counterpart of the bridge's raw
mode. Site activations, logits and NLL then agree with the bridge (``tests/test_hooked.py``).

Supported architectures (:data:`ARCHITECTURES`): Llama (the built-in model), Gemma 3 text
models (``gemma-3-270m``) and GPT-2 (a non-gated MLP). Gemma's converter stores the embedding multiplied by √d_model and
each RMS norm weight plus one (Gemma's norms compute ``x · (1 + w)``): the same function, other
numbers, so a Gemma ``HookedTransformer`` has another weights hash than its bridge.
"""

import warnings
from types import SimpleNamespace
from typing import Any

import torch

from .errors import LangNeuronsError, choices

ARCHITECTURES = ("LlamaForCausalLM", "Gemma3ForCausalLM", "GPT2LMHeadModel")
ROPE_TYPES = ("default", "llama3")


def _get(hf: Any, name: str, default: Any = None) -> Any:
    value = getattr(hf, name, default)
    return default if value is None else value


def _rope(hf: Any, layer_type: str | None = None) -> dict:
    """The rotary parameters (transformers 5: ``rope_parameters``, per layer type for Gemma 3)."""
    params = getattr(hf, "rope_parameters", None) or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    if "rope_theta" not in params and getattr(hf, "rope_theta", None) is not None:
        params = {**params, "rope_theta": hf.rope_theta}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise LangNeuronsError(f"rope_type {rope_type!r} is not supported on a HookedTransformer; "
                               f"allowed: {choices(ROPE_TYPES)}")
    return {"rope_type": rope_type, **params}


def _refuse_biases(hf: Any, architecture: str) -> None:
    for name in ("attention_bias", "mlp_bias"):
        if getattr(hf, name, False):
            raise LangNeuronsError(f"{architecture} with {name}=True is not supported on a HookedTransformer "
                                   f"(TransformerLens's converter drops biases); allowed: {name}=False")


def config_dict(hf: Any) -> dict:
    """``HookedTransformerConfig`` fields for the Hugging Face config ``hf`` (raw weights)."""
    architectures = list(getattr(hf, "architectures", None) or [])
    architecture = architectures[0] if architectures else None
    if architecture not in ARCHITECTURES:
        raise LangNeuronsError(f"architecture {architecture!r} is not supported on a HookedTransformer "
                               f"(TransformerLens 3.x); allowed: {choices(ARCHITECTURES)} — or install "
                               "transformer-lens>=4.3 for the TransformerBridge")
    common = {"original_architecture": architecture, "init_weights": False, "default_prepend_bos": True,
              "d_vocab": int(hf.vocab_size), "tie_word_embeddings": bool(_get(hf, "tie_word_embeddings", False))}
    if architecture == "GPT2LMHeadModel":
        return {**common, **_gpt2(hf)}
    _refuse_biases(hf, architecture)
    n_heads = int(hf.num_attention_heads)
    d_head = int(_get(hf, "head_dim", hf.hidden_size // n_heads))
    n_kv = int(_get(hf, "num_key_value_heads", n_heads))
    cfg = {
        **common, "d_model": int(hf.hidden_size), "d_head": d_head, "n_heads": n_heads,
        "d_mlp": int(hf.intermediate_size), "n_layers": int(hf.num_hidden_layers),
        "n_ctx": int(hf.max_position_embeddings), "eps": float(hf.rms_norm_eps), "normalization_type": "RMS",
        "final_rms": True, "gated_mlp": True, "positional_embedding_type": "rotary", "rotary_dim": d_head,
        "rotary_adjacent_pairs": False,
    }
    if architecture == "LlamaForCausalLM":
        rope = _rope(hf)
        cfg.update(act_fn=hf.hidden_act, n_key_value_heads=n_kv if n_kv != n_heads else None,
                   rotary_base=float(rope.get("rope_theta", 10000.0)))
        if rope["rope_type"] == "llama3":
            cfg.update(use_NTK_by_parts_rope=True, NTK_by_parts_factor=float(rope.get("factor", 1.0)),
                       NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                       NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                       NTK_original_ctx_len=int(rope.get("original_max_position_embeddings", cfg["n_ctx"])))
        return cfg
    return {**cfg, **_gemma3(hf, cfg["n_layers"]), "n_key_value_heads": n_kv}


def _gpt2(hf: Any) -> dict:
    if getattr(hf, "reorder_and_upcast_attn", False):
        raise LangNeuronsError("GPT-2 with reorder_and_upcast_attn=True is not supported on a HookedTransformer; "
                               "allowed: reorder_and_upcast_attn=False")
    return {"d_model": int(hf.n_embd), "d_head": int(hf.n_embd) // int(hf.n_head), "n_heads": int(hf.n_head),
            "d_mlp": int(_get(hf, "n_inner", 4 * hf.n_embd)), "n_layers": int(hf.n_layer),
            "n_ctx": int(hf.n_positions), "eps": float(hf.layer_norm_epsilon), "act_fn": hf.activation_function,
            "use_attn_scale": bool(_get(hf, "scale_attn_weights", True)), "normalization_type": "LN",
            "scale_attn_by_inverse_layer_idx": bool(_get(hf, "scale_attn_by_inverse_layer_idx", False)),
            "positional_embedding_type": "standard"}


def _gemma3(hf: Any, n_layers: int) -> dict:
    """Gemma 3 text: sliding-window and global layers, each kind with its own rotary base."""
    types = list(_get(hf, "layer_types", []))
    allowed = {"sliding_attention": "local", "full_attention": "global"}
    bad = [t for t in types if t not in allowed]
    if len(types) != n_layers or bad:
        raise LangNeuronsError(f"Gemma 3 layer_types {bad[:1] or types!r} not understood; "
                               f"expected one of {choices(allowed)} for each of the {n_layers} layers")
    glob, local = _rope(hf, "full_attention"), _rope(hf, "sliding_attention")
    if glob["rope_type"] != "default" or local["rope_type"] != "default":
        raise LangNeuronsError("Gemma 3 with rope scaling is not supported on a HookedTransformer; "
                               "allowed: rope_type 'default'")
    cfg = {"act_fn": hf.hidden_activation, "rotary_base": float(glob["rope_theta"]),
           "rotary_base_local": float(local["rope_theta"]), "use_attn_scale": True,
           "attn_scale": float(hf.query_pre_attn_scalar) ** 0.5, "use_normalization_before_and_after": True,
           "use_qk_norm": True, "use_local_attn": True, "window_size": int(hf.sliding_window),
           "attn_types": [allowed[t] for t in types]}
    for hf_name, tl_name in (("attn_logit_softcapping", "attn_scores_soft_cap"),
                             ("final_logit_softcapping", "output_logits_soft_cap")):
        if getattr(hf, hf_name, None) is not None:
            cfg[tl_name] = float(getattr(hf, hf_name))
    return cfg


def build(hf_model: Any, tokenizer: Any, name: str, device: str, dtype: torch.dtype) -> Any:
    """A ``HookedTransformer`` with ``hf_model``'s weights, raw; ``hf_model`` is left as it was."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (convert_gemma_weights, convert_gpt2_weights,
                                                                convert_llama_weights)

    fields = config_dict(hf_model.config)
    cfg = HookedTransformerConfig(**fields, model_name=str(name), device=str(device), dtype=dtype)
    convert = {"LlamaForCausalLM": convert_llama_weights, "Gemma3ForCausalLM": convert_gemma_weights,
               "GPT2LMHeadModel": convert_gpt2_weights}[fields["original_architecture"]]
    state = {k: v.detach().to(dtype) for k, v in convert(hf_model, cfg).items()}
    with warnings.catch_warnings():  # "HookedTransformer is deprecated": TL 3.x is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    # load_and_process_state_dict loads key by key and ignores names the model lacks: check first.
    # A bias the converter leaves out (GPT-2's unembedding has none) is zero.
    params = dict(model.named_parameters())
    for name in set(params) - set(state):
        if name.rsplit(".", 1)[-1].startswith("b_"):
            state[name] = torch.zeros_like(params[name])
    missing, unknown = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unknown:
        raise LangNeuronsError(f"converting {fields['original_architecture']} weights for a HookedTransformer: "
                               f"missing {missing[:3]}, unexpected {unknown[:3]}")
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    return model.to(device, print_details=False).eval()


# ---------------------------------------------------------------------------------------------
# Generation and lm-eval on a HookedTransformer (its back end in :mod:`.backends` calls these)


def generate(model, tokens, attention_mask, generation):
    """A ``HookedTransformer``'s own KV-cached ``generate``. It takes no attention mask: it finds
    the left padding itself, as the leading pad tokens (BOS unmasked where BOS = pad), so the mask
    it will use is checked against ours first; it has no repetition penalty (its ``freq_penalty``
    is another rule), so one other than 1 is refused."""
    from transformer_lens.utilities import get_attention_mask

    if generation.repetition_penalty != 1.0:
        raise LangNeuronsError(f"repetition_penalty={generation.repetition_penalty} needs the TransformerBridge "
                               "(TransformerLens >= 4.3); a HookedTransformer generates with repetition_penalty=1.0 only")
    theirs = get_attention_mask(model.tokenizer, tokens, True, padding_side="left")
    if not torch.equal(theirs.to(attention_mask.dtype), attention_mask):
        raise LangNeuronsError("a HookedTransformer infers the attention mask from pad tokens and would get it wrong "
                               "for this batch (a prompt token equals the pad token); use batch_size=1")
    kw = generation.generate_kwargs()
    del kw["repetition_penalty"]
    return model.generate(tokens, return_type="tokens", verbose=False, use_past_kv_cache=True,
                          prepend_bos=True, padding_side="left", **kw)


class HookedCausalLM(torch.nn.Module):
    """A ``HookedTransformer`` seen through the few attributes ``HFLM`` uses on a ready model."""

    def __init__(self, ht: Any):
        from transformers import PretrainedConfig

        super().__init__()
        self.ht = ht
        # HFLM reads the config for its back end (given as "causal") and the pad-token rule (it
        # only special-cases Qwen); max_length is passed explicitly
        self.config = PretrainedConfig()

    @property
    def device(self) -> torch.device:
        return torch.device(self.ht.cfg.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.ht.cfg.dtype

    def tie_weights(self) -> None:  # HFLM calls it on every model; a HookedTransformer's are its own
        return None

    def forward(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.ht(input_ids, return_type="logits"))

    def generate(self, input_ids: torch.Tensor, max_length: int, stopping_criteria=None, pad_token_id=None,
                 use_cache: bool = True, do_sample: bool = False, attention_mask: torch.Tensor | None = None,
                 **kw: Any) -> torch.Tensor:
        unknown = set(kw) - {"temperature", "top_p", "top_k"}
        if unknown:
            raise LangNeuronsError(f"a HookedTransformer cannot generate with {sorted(unknown)[0]}=; "
                                   "it supports do_sample, temperature, top_p and top_k")
        opts = dict(max_new_tokens=max(max_length - input_ids.shape[1], 1), do_sample=do_sample, stop_at_eos=True,
                    use_past_kv_cache=use_cache, return_type="tokens", padding_side="left", verbose=False, **kw)
        with torch.no_grad():
            if attention_mask is None or bool(attention_mask.all()):
                return self.ht.generate(input_ids, **opts)
            # HFLM left-pads a batch and passes its attention mask: each row is generated on its
            # own, without its pads (so none is attended to), and put back behind them; rows are
            # filled up with EOS, as the HookedTransformer fills a finished row (lm-eval stops at EOS)
            rows = []
            for ids, mask in zip(input_ids, attention_mask.bool()):
                out = self.ht.generate(ids[mask][None], **opts)[0]
                rows.append(torch.cat([ids, out[int(mask.sum()):]]))
            width = max(len(r) for r in rows)
            eos = self.ht.tokenizer.eos_token_id
            return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=eos) for r in rows])
