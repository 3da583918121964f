"""The model as an lm-eval language model, so that lm-eval's own request handling scores it.

A ``TransformerBridge`` replaces the Hugging Face model's submodules in place, so lm-eval's
``HFLM`` built on the wrapped model (``model.original_model``) runs the bridge's components, and
every TransformerLens hook on the bridge — every intervention of this package — fires inside
lm-eval's forward passes and its ``generate`` (with transformers ≥ 5.24, :mod:`..compat` makes the
bridge write the KV cache that ``generate`` reads).

Which ``HFLM`` a model gets is its back end's (:mod:`..backends`). A TL 3.x ``HookedTransformer`` is
no Hugging Face model; :class:`..hooked.HookedCausalLM` gives it just the
surface ``HFLM`` calls on a model it did not load itself — ``config``, ``device``, ``forward`` →
``.logits``, ``generate`` — so log-likelihoods, batching and generation bookkeeping are still
lm-eval's. Its ``generate`` is the HookedTransformer's own KV-cached one, which has no stopping
criteria: it runs to ``max_length`` or EOS, and lm-eval then cuts each continuation at the task's
stop strings, as it always does. Under greedy decoding the kept text is the same (a token never
depends on later ones); it only costs the tokens past the stop.
"""

from typing import Any

from ..backends import backend_of
from ..hooked import HookedCausalLM  # noqa: F401  (importable from here, as before it moved)


def task_lm(model: Any, batch_size: int = 8, max_length: int | None = None):
    """lm-eval's ``HFLM`` on ``model`` (a bridge or a HookedTransformer), batch ``batch_size``."""
    import logging

    # HFLM warns that a ready model ignores its loading arguments: that is the point here
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    return backend_of(model).lm_eval(model, batch_size, max_length)
