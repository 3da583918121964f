"""The logit lens: every layer's residual stream read out exactly as the model reads out its last.

Layer 0 is the input of the first block (``blocks.0.hook_resid_pre``, the embeddings as the model
scales them); layer ``l ≥ 1`` is the output of block ``l − 1`` (``blocks.{l-1}.hook_resid_post``).
Each is put through the model's own final norm module (``model.ln_final``, with its weights: no
folding), its own unembedding (``model.unembed``) and, where the model has one, its final logit
soft cap (Gemma 2: ``c · tanh(logits / c)``), so the last layer's distribution *is* the model's
output distribution (tested), and layer ``l``'s equals Hugging Face's ``hidden_states[l]`` put
through the final norm and ``lm_head`` by hand (tested).

On the TransformerBridge this equals ``cache.accumulated_resid(apply_ln=True)`` followed by
``model.unembed`` (tested); the package applies ``ln_final`` itself so that nothing but the
residual vectors at the read positions is kept, and the forward pass stops after the last block
(the unembedding of every position, 262,144 logits each on Gemma 3, is never computed).
"""

import math
from typing import Any

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from ..backends import backend_of
from ..models import StopForward, forward_until


def lens_hooks(model: Any) -> list[str]:
    """The hook read at each lens layer 0..L."""
    L = int(model.cfg.n_layers)
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]


def soft_cap(model: Any) -> float | None:
    """The model's final logit soft cap, or None. A bridge's forward is Hugging Face's, which caps
    after ``lm_head`` (outside ``model.unembed``); a HookedTransformer caps by ``cfg.output_logits_soft_cap``."""
    hf = backend_of(model).hf_model(model)  # the wrapped Hugging Face model, where the back end keeps one
    if hf is not None:
        cap = getattr(hf.config, "final_logit_softcapping", None)
        if cap is None:  # a multimodal config keeps it in its text part
            cap = getattr(getattr(hf.config, "text_config", None), "final_logit_softcapping", None)
        return float(cap) if cap else None
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    return cap if cap > 0 else None


def read_out(model: Any, resid: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows vocab"]:
    """Logits of residual vectors, through the model's final norm, unembedding and soft cap."""
    logits = model.unembed(model.ln_final(resid))
    cap = soft_cap(model)
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    return logits


def layer_log_probs(model: Any, tokens: Int64[Tensor, "batch pos"], attention_mask: Int64[Tensor, "batch pos"],
                    last: Int64[Tensor, " batch"]) -> Float[Tensor, "batch layer vocab"]:
    """Log-probabilities (float32) of the next token after position ``last[b]`` of each row, at
    every lens layer. Rows are right-padded (the positions before ``last`` never see the padding)."""
    names = lens_hooks(model)
    rows = torch.arange(tokens.shape[0])
    seen: dict[int, Tensor] = {}

    def make(i: int):
        def hook(act: Tensor, hook: Any = None) -> None:
            seen[i] = act[rows.to(act.device), last.to(act.device)].detach()
            if i == len(names) - 1:
                raise StopForward  # the unembedding of every position is not needed
        return hook

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, make(i)) for i, n in enumerate(names)]):
        forward_until(model, tokens.to(model.cfg.device), attention_mask)
        device = seen[len(names) - 1].device
        stacked = torch.stack([seen[i].to(device) for i in range(len(names))], 1)  # [B, L+1, d]
        logits = read_out(model, stacked)
    return torch.log_softmax(logits.float(), -1)


def mean_interval(values: list[float], z: float = 1.959963984540054) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% interval (mean ± z·sd/√n; sd with n − 1)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return m, m - half, m + half
