"""The model as an lm-eval language model, so that lm-eval's own request handling scores it.

A ``TransformerBridge`` replaces the Hugging Face model's submodules in place, so lm-eval's
``HFLM`` built on the wrapped model (``model.original_model``) runs the bridge's components, and
every TransformerLens hook on the bridge — every intervention of this package — fires inside
lm-eval's forward passes and its ``generate`` (with transformers ≥ 5.24, :mod:`..compat` makes the
bridge write the KV cache that ``generate`` reads).

A TL 3.x ``HookedTransformer`` is no Hugging Face model; :class:`HookedCausalLM` gives it just the
surface ``HFLM`` calls on a model it did not load itself — ``config``, ``device``, ``forward`` →
``.logits``, ``generate`` — so log-likelihoods, batching and generation bookkeeping are still
lm-eval's. Its ``generate`` is the HookedTransformer's own KV-cached one, which has no stopping
criteria: it runs to ``max_length`` or EOS, and lm-eval then cuts each continuation at the task's
stop strings, as it always does. Under greedy decoding the kept text is the same (a token never
depends on later ones); it only costs the tokens past the stop.
"""

from types import SimpleNamespace
from typing import Any

import torch

from ..errors import LangNeuronsError
from ..backends import is_hooked


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


def task_lm(model: Any, batch_size: int = 8, max_length: int | None = None):
    """lm-eval's ``HFLM`` on ``model`` (a bridge or a HookedTransformer), batch ``batch_size``."""
    import logging

    from lm_eval.models.huggingface import HFLM

    # HFLM warns that a ready model ignores its loading arguments: that is the point here
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    if is_hooked(model):
        return HFLM(pretrained=HookedCausalLM(model), tokenizer=model.tokenizer, backend="causal",
                    batch_size=batch_size, max_length=max_length or int(model.cfg.n_ctx))
    if not hasattr(model, "original_model"):
        raise LangNeuronsError(f"expected a TransformerBridge or a HookedTransformer, got {type(model).__name__}")
    return HFLM(pretrained=model.original_model, tokenizer=model.tokenizer, batch_size=batch_size,
                max_length=max_length)
