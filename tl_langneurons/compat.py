"""One compatibility shim, installed only where it is needed.

transformers 5.24 renamed the key/value-cache argument of its attention modules from
``past_key_values`` to ``cache`` (``past_key_values`` stays a deprecated alias until 5.40, but the
decoder layers now pass ``cache=``). TransformerLens 4.3's attention bridge
(``AttentionBridge._update_kv_cache``) reads only ``past_key_values`` (or ``layer_past``), so under
5.24 the cache is never written and every cached generation step attends to the new token alone —
the bridge's own ``generate`` and the wrapped Hugging Face model's ``generate`` alike.

:func:`install` wraps that one method so that a ``cache=`` argument is read as
``past_key_values=`` when the latter is absent. It does nothing when the installed transformers
still passes ``past_key_values`` (its Llama attention has no ``cache`` parameter), when the
installed TransformerLens has no such method, or when it has already been installed.
``tests/test_generation.py`` compares cached generation with the Hugging Face model's own.
"""

import inspect

_INSTALLED = False


def cache_renamed() -> bool:
    """Does the installed transformers pass the KV cache to attention modules as ``cache=``?"""
    from transformers.models.llama.modeling_llama import LlamaAttention

    return "cache" in inspect.signature(LlamaAttention.forward).parameters


def install() -> bool:
    """Install the shim if it is needed; True if it is in place after the call."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:  # no TransformerLens bridge (TL 3.x): nothing to adapt
        return False
    if not hasattr(AttentionBridge, "_update_kv_cache") or not cache_renamed():
        return False
    original = AttentionBridge._update_kv_cache

    def _update_kv_cache(self, k, v, **kwargs):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    AttentionBridge._update_kv_cache = _update_kv_cache
    _INSTALLED = True
    return True
