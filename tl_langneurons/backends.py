"""The TransformerLens back ends, one :class:`Backend` object each: a ``TransformerBridge`` (TL ≥ 4.3)
wrapping the Hugging Face model, or with TL 3.x a ``HookedTransformer`` built from it
(:mod:`.hooked`).

A back end says how a model is built from the loaded Hugging Face model (:func:`~.load_model`),
whether it can be dispatched over several devices or wrap a model already in memory, how it
generates, what lm-eval's ``HFLM`` wraps, which hook every forward call starts at (position
tracking), and whether a given model object is one of its own. Every module asks the back end
(:func:`installed_backend` for loading, :func:`backend_of` for a model) instead of probing the
model's attributes or the installed TransformerLens.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import compat
from .errors import LangNeuronsError, choices
from .placement import execution_device
from .tokens import pad_id


@dataclass(frozen=True)
class Backend:
    """One TransformerLens back end.

    Attributes:
        name: ``"bridge"`` or ``"hooked"``.
        help: what it is.
        installed: does the installed TransformerLens provide it (the first installed one loads).
        owns: is this model object one of this back end's.
        build: ``(name, where, hf_model, tokenizer, dtype, placed, hf_kwargs, device_map) → model``:
            the TransformerLens model on a loaded Hugging Face model.
        generate: ``(model, tokens, attention_mask, generation) → [batch, prompt + new]`` ids,
            KV-cached, under whatever hooks are on the model.
        lm_eval: ``(model, batch_size, max_length) → HFLM``: lm-eval's model on it.
        hf_model: the Hugging Face model it wraps (``None``: it keeps none).
        call_start: the hooks every forward call goes through first, in order of preference
            (:mod:`.intervene` tracks positions there).
        dispatches: can be one model over several devices (``device_map``).
        wraps_in_memory: can wrap a Hugging Face model already in memory (:func:`~.boot_hf`).
    """

    name: str
    help: str
    installed: Callable[[], bool]
    owns: Callable[[Any], bool]
    build: Callable[..., Any]
    generate: Callable[..., torch.Tensor]
    lm_eval: Callable[..., Any]
    hf_model: Callable[[Any], Any]
    call_start: tuple[str, ...]
    dispatches: bool
    wraps_in_memory: bool


# ---------------------------------------------------------------------------------------------
# TransformerBridge (TL >= 4.3)


def boot_bridge(model, where, hf_model, tokenizer, torch_dtype, placed: dict, hf_kwargs: dict, device_map):
    from transformer_lens.model_bridge import TransformerBridge  # heavy import

    compat.install()  # KV-cached generation with transformers >= 5.24 (does nothing elsewhere)
    try:
        bridge = TransformerBridge.boot_transformers(
            where, hf_model=hf_model, tokenizer=tokenizer, device=placed.get("device"), dtype=torch_dtype
        )
    except ValueError as e:
        if not hf_kwargs:
            raise
        # e.g. an "auto" map that came out mixing GPUs with CPU/disk offload, which TL refuses
        raise LangNeuronsError(f"TransformerLens refused {model!r} as dispatched by device_map={device_map!r}: "
                               f"{str(e).splitlines()[0]}") from None
    if hf_kwargs and torch.device(bridge.cfg.device).type == "meta":
        # TL takes the input device from the embedding's parameter, a meta placeholder when the
        # embedding is offloaded; tokens go where accelerate computes it
        where_embed = execution_device(hf_model.get_input_embeddings())
        bridge.cfg.device = str(where_embed if where_embed is not None else "cpu")
    return bridge


def _bridge_generate(model, tokens, attention_mask, generation):
    """Through the Hugging Face model the bridge wraps: the bridge replaced that model's submodules
    in place, so every TransformerLens hook fires inside it, and Hugging Face's own loop handles left
    padding, position ids, sliding-window caches and sampling. With transformers ≥ 5.24 the bridge
    needs :mod:`.compat`'s shim to write its KV cache: installed here too (it is idempotent), so a
    bridge the caller booted without :func:`~tl_langneurons.load_model` is cached correctly."""
    compat.install()
    kw = {"max_new_tokens": generation.max_new_tokens, "repetition_penalty": generation.repetition_penalty,
          "pad_token_id": pad_id(model.tokenizer), "use_cache": True}
    if not generation.stop_at_eos:
        kw["min_new_tokens"] = generation.max_new_tokens
    if generation.greedy:
        kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        kw.update(do_sample=True, temperature=generation.temperature, top_k=generation.top_k or 0, top_p=None)
    return model.original_model.generate(input_ids=tokens, attention_mask=attention_mask, **kw)


def _bridge_lm_eval(model, batch_size: int, max_length: int | None):
    """``HFLM`` on the wrapped Hugging Face model: it runs the bridge's components, so every hook
    on the bridge fires inside lm-eval's forward passes and its ``generate``."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model.original_model, tokenizer=model.tokenizer, batch_size=batch_size,
                max_length=max_length)


def _has_bridge() -> bool:
    import importlib.util

    # TL 3.9 ships an early TransformerBridge too; it is not used (untested): TL 3.x is "hooked"
    return importlib.util.find_spec("transformer_lens.HookedTransformer") is None


BRIDGE = Backend(
    "bridge", "TransformerBridge (TransformerLens >= 4.3) wrapping the Hugging Face model, raw weights",
    installed=_has_bridge,
    owns=lambda model: getattr(model, "original_model", None) is not None,
    build=boot_bridge, generate=_bridge_generate, lm_eval=_bridge_lm_eval,
    hf_model=lambda model: model.original_model,
    call_start=("hook_embed", "blocks.0.hook_resid_pre"), dispatches=True, wraps_in_memory=True)


# ---------------------------------------------------------------------------------------------
# HookedTransformer (TL 3.x)


def _hooked_build(model, where, hf_model, tokenizer, torch_dtype, placed: dict, hf_kwargs: dict, device_map):
    from .hooked import build

    return build(hf_model, tokenizer, model, placed.get("device") or "cpu", torch_dtype)


def _hooked_generate(model, tokens, attention_mask, generation):
    from .hooked import generate

    return generate(model, tokens, attention_mask, generation)


def _hooked_lm_eval(model, batch_size: int, max_length: int | None):
    """``HFLM`` on :class:`.hooked.HookedCausalLM`, the few attributes ``HFLM`` uses on a ready model."""
    from lm_eval.models.huggingface import HFLM

    from .hooked import HookedCausalLM

    return HFLM(pretrained=HookedCausalLM(model), tokenizer=model.tokenizer, backend="causal",
                batch_size=batch_size, max_length=max_length or int(model.cfg.n_ctx))


HOOKED = Backend(
    "hooked", "HookedTransformer (TransformerLens 3.x) built offline from the Hugging Face weights, raw",
    installed=lambda: not _has_bridge(),
    # no wrapped Hugging Face model, and TransformerLens's hooks and config
    owns=lambda model: (getattr(model, "original_model", None) is None and hasattr(model, "hook_dict")
                        and hasattr(model, "cfg")),
    build=_hooked_build, generate=_hooked_generate, lm_eval=_hooked_lm_eval, hf_model=lambda model: None,
    # a HookedTransformer's generate embeds outside forward, without hook_embed: every forward call
    # starts at the first block's input
    call_start=("blocks.0.hook_resid_pre",), dispatches=False, wraps_in_memory=False)

BACKENDS: tuple[Backend, ...] = (BRIDGE, HOOKED)


def installed_backend() -> Backend:
    """The back end models are loaded with: the first the installed TransformerLens provides."""
    return next(b for b in BACKENDS if b.installed())


def backend_of(model: Any) -> Backend:
    """The back end whose model ``model`` is; anything else is refused."""
    for b in BACKENDS:
        if b.owns(model):
            return b
    raise LangNeuronsError(f"expected a model of one of the back ends {choices(b.name for b in BACKENDS)} "
                           f"(a TransformerBridge or a HookedTransformer), got {type(model).__name__}")


def backend() -> str:
    """The installed back end's name: ``"hooked"`` where the installed TransformerLens still has
    ``HookedTransformer`` (3.x), else ``"bridge"`` (4.x)."""
    return installed_backend().name


def is_hooked(model: Any) -> bool:
    """Is ``model`` a ``HookedTransformer`` (no wrapped Hugging Face model), not a bridge?"""
    return backend_of(model) is HOOKED
