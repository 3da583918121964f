"""PLND importance of MLP neurons (Zhao et al., NeurIPS 2024), accumulated while recording.

Switching MLP neuron ``j`` of layer ``l`` off (its down-projection input ``post_j := 0``) changes
the MLP's output on a token by exactly ``−post_j · W_down[:, j]``, so the norm of that change — the
neuron's *importance* on the token in Zhao et al.'s sense — is

    imp_j = |post_j| · ‖W_down[:, j]‖₂

for every neuron at once, from the one ``hook_post`` activation the forward pass computes anyway.
On a model whose block adds the MLP output straight to the residual stream (Llama, Mistral, Qwen,
GPT-2, …) this is also the change of the layer's output; on Gemma 2/3, whose MLP output passes
through a ``post_feedforward_layernorm`` first, it is the change of the down projection's output
(the norm's rescaling is not a per-neuron quantity). See ``docs/plnd.md``.

Per document (a recorded sequence: one sentence, or one packed window), the importance of the
change of the whole output matrix (Frobenius norm over the document's counted tokens) is
``‖W_down[:, j]‖₂ · sqrt(Σ_t post_tj²)``. A neuron is *activated* by a document when this is
among the ``top_rate`` share of its layer's largest in that document (the released code's rule:
a per-layer top-k in each document, see ``docs/plnd.md``).

Recorded per language ``k``, layer ``l``, neuron ``j`` (sums, so shards merge by addition):
``importance_sum`` (Σ over counted tokens of ``imp``), ``importance_docs`` (documents that activate
the neuron) and, per language, ``n_documents``.
"""

import math
from typing import Any

import torch
from jaxtyping import Float, Float64
from torch import Tensor

from .errors import LangNeuronsError

# Zhao et al.'s README keeps the top 2,000 of Llama-3-8B's 14,336 FFN neurons per layer and document.
DEFAULT_TOP_RATE = 0.14
IMPORTANCE_TENSORS = ("importance_sum", "importance_docs", "n_documents")


def down_norms(model: Any) -> Float[Tensor, "layer d_mlp"]:
    """``‖W_down[:, j]‖₂`` of every MLP neuron, read from the model's own down projections (float32)."""
    rows = []
    for l in range(int(model.cfg.n_layers)):
        w = model.blocks[l].mlp.W_out  # [d_mlp, d_model] on the bridge and on a HookedTransformer
        if w.device.type == "meta":
            raise LangNeuronsError(f"layer {l}'s down projection is offloaded (meta); PLND importance needs its "
                                   "weights on a device")
        rows.append(w.detach().float().norm(dim=1).cpu())
    return torch.stack(rows)


def top_count(d_mlp: int, top_rate: float) -> int:
    """Neurons per layer counted as activated in a document: ``ceil(top_rate · d_mlp)``, at least 1."""
    if not (isinstance(top_rate, (int, float)) and not isinstance(top_rate, bool) and 0 < top_rate <= 1):
        raise LangNeuronsError(f"plnd_top_rate must be a number in (0, 1], got {top_rate!r}")
    return max(1, math.ceil(top_rate * d_mlp - 1e-9))


class ImportanceSums:
    """The running PLND sums of a recording, each layer's on its activations' device, and their hooks.

    Used by :class:`~tl_langneurons.record.Accumulator`; the batch's row indices and masks come
    from it (:meth:`start_batch`).
    """

    def __init__(self, n_langs: int, norms: Tensor, devices: list, top_rate: float):
        L, I = norms.shape
        self.devices = [torch.device(d) for d in devices]
        self.k = top_count(I, top_rate)
        self.norms = [norms[l].to(d) for l, d in enumerate(self.devices)]
        self.importance_sum = [torch.zeros(n_langs, I, dtype=torch.float64, device=d) for d in self.devices]
        self.importance_docs = [torch.zeros(n_langs, I, dtype=torch.float64, device=d) for d in self.devices]
        self.n_documents = torch.zeros(n_langs, dtype=torch.float64)
        self._language = 0
        self._counted: dict = {}
        self._rows: dict = {}

    def tensors(self) -> dict[str, Tensor]:
        def stacked(per_layer):
            return torch.stack([t.to("cpu") for t in per_layer], 1)

        return {"importance_sum": stacked(self.importance_sum), "importance_docs": stacked(self.importance_docs),
                "n_documents": self.n_documents}

    def load(self, state: dict[str, Tensor]) -> None:
        for name in ("importance_sum", "importance_docs"):
            for layer, t in enumerate(getattr(self, name)):
                t.copy_(state[name][:, layer])
        self.n_documents.copy_(state["n_documents"])

    def start_batch(self, language: int, counted: Tensor, rows: dict) -> None:
        self._language = language
        self._counted = {d: counted.to(d) for d in set(self.devices)}
        self._rows = rows
        self.n_documents[language] += float((counted.sum(1) > 0).sum())

    def hook(self, layer: int, stop: Exception | None):
        dev = self.devices[layer]

        def fn(post: Tensor, hook: Any = None) -> None:
            p = post.to(torch.float32)  # [B, T, I], the down projection's input
            k, w = self._language, self.norms[layer]
            x = p.reshape(-1, p.shape[-1])[self._rows[dev]]  # counted tokens only
            self.importance_sum[layer][k] += (x.abs() * w).sum(0)
            counted = self._counted[dev]
            sq = torch.where(counted[..., None], p * p, torch.zeros((), device=p.device)).sum(1)  # [B, I]
            doc = sq.sqrt() * w
            keep = counted.any(1)
            if bool(keep.any()):
                top = torch.topk(doc[keep], self.k, dim=1).indices
                self.importance_docs[layer][k] += torch.bincount(top.reshape(-1), minlength=p.shape[-1]).to(torch.float64)
            if stop is not None:
                raise stop
        return fn


def mean_importance(stats) -> Float64[Tensor, "lang layer d_mlp"]:
    """Mean PLND importance per token, per language (from statistics recorded with ``plnd=True``)."""
    if stats.importance_sum is None:
        raise LangNeuronsError("these statistics hold no PLND importance; record with plnd=True (--plnd)")
    return stats.importance_sum / stats.n_tokens.clamp_min(1)[:, None, None]


def activation_share(stats) -> Float64[Tensor, "lang layer d_mlp"]:
    """Share of each language's documents that activate each neuron (PLND's consistency)."""
    if stats.importance_docs is None:
        raise LangNeuronsError("these statistics hold no PLND importance; record with plnd=True (--plnd)")
    if (stats.n_documents <= 0).any():
        empty = [k for k, n in zip(stats.languages, stats.n_documents.tolist()) if n <= 0]
        raise LangNeuronsError(f"no documents recorded for language(s) {empty}")
    return stats.importance_docs / stats.n_documents[:, None, None]
