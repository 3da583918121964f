"""Compatibility shims for transformers' rename of the KV cache, installed only where needed.

transformers 5.24 renamed the key/value-cache argument from ``past_key_values`` to ``cache``:
its attention modules take ``cache=`` (the decoder layers pass it so), and the models' ``forward``
takes ``cache=`` with ``past_key_values`` a deprecated alias that emits a ``FutureWarning``
("removed in version 5.40.0") on every call. TransformerLens 4.3 still speaks the old name in two
places, and this module makes each follow the rename:

- the attention bridge (``AttentionBridge._update_kv_cache``) reads only ``past_key_values`` (or
  ``layer_past``), so the cache the decoder layers hand it as ``cache=`` is never written and every
  cached generation step attends to the new token alone — the bridge's own ``generate`` and the
  wrapped Hugging Face model's ``generate`` alike. Shim: a ``cache=`` argument is read as
  ``past_key_values=`` when the latter is absent.
- the bridge's own ``generate`` (``TransformerBridge.generate``, and any forward pass given a
  cache) passes the cache to the Hugging Face model as ``past_key_values=``, through
  ``TransformersDriver.forward``: the user sees the ``FutureWarning`` on every ``model.generate``,
  and with transformers 5.40 the alias is gone. Shim: the driver passes it as ``cache=`` (and
  ``cache_params=``, the same rename for state-space models) when the model's ``forward`` takes
  ``cache`` and not the old name.

Each shim does nothing when the installed transformers still uses the old names, when the installed
TransformerLens has no such method (TL 3.x), or when it has already been installed.
``tests/test_evaluate.py`` checks that cached generation equals the Hugging Face model's own and
that no deprecation warning from transformers reaches the user.
"""

import inspect

_INSTALLED = False
_RENAMED = ("past_key_values", "cache_params")  # transformers' old names of ``cache``


def cache_renamed() -> bool:
    """Does the installed transformers pass the KV cache to attention modules as ``cache=``?"""
    from transformers.models.llama.modeling_llama import LlamaAttention

    return "cache" in inspect.signature(LlamaAttention.forward).parameters


def install() -> bool:
    """Install the shims that are needed; True if they are in place after the call."""
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
    _install_driver_rename()
    _INSTALLED = True
    return True


def _takes_cache(forward, seen: dict) -> bool:
    """Does a model's ``forward`` take ``cache`` and none of its old names? (Per class: a
    signature is read once, not at every generated token.)"""
    key = getattr(forward, "__func__", forward)
    if key not in seen:
        try:
            params = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            params = {}
        seen[key] = "cache" in params and not any(old in params for old in _RENAMED)
    return seen[key]


def _install_driver_rename() -> None:
    try:
        from transformer_lens.model_bridge.sources.transformers_driver import TransformersDriver
    except ImportError:  # a TransformerLens without drivers calls the model another way
        return
    original = TransformersDriver.forward
    seen: dict = {}

    def forward(self, input_ids=None, **kwargs):
        old = [name for name in _RENAMED if name in kwargs]
        if len(old) == 1 and "cache" not in kwargs and _takes_cache(self._model.forward, seen):
            kwargs["cache"] = kwargs.pop(old[0])
        return original(self, input_ids, **kwargs)

    TransformersDriver.forward = forward
