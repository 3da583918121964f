"""The TransformerLens back ends: a ``TransformerBridge`` (TL ≥ 4.3) wrapping the Hugging Face
model, or with TL 3.x a ``HookedTransformer`` built from it (:mod:`.hooked`)."""

from typing import Any

import torch

from . import compat
from .errors import LangNeuronsError
from .placement import execution_device


def backend() -> str:
    """``"hooked"`` where the installed TransformerLens still has ``HookedTransformer`` (3.x), else
    ``"bridge"`` (4.x). TL 3.9 ships an early ``TransformerBridge`` too; it is not used (untested)."""
    import importlib.util

    return "hooked" if importlib.util.find_spec("transformer_lens.HookedTransformer") is not None else "bridge"


def is_hooked(model: Any) -> bool:
    """Is ``model`` a ``HookedTransformer`` (no wrapped Hugging Face model), not a bridge?"""
    return getattr(model, "original_model", None) is None

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
