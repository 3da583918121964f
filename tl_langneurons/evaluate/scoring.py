"""Log-likelihoods of text under the model: each token's NLL, summed per language, and the
log-probability of a continuation given its context (methods page: [evaluation](methods.md#evaluation)).

Memory: one forward pass's ``[rows, pos, vocab]`` logits are the one large tensor, and rows are
grouped so that it stays within :data:`LOGITS_BUDGET_BYTES` (512 MiB; on a 262k-token vocabulary
16 × 128 positions of float32 logits would be 2 GiB); cross-entropy is taken from them in chunks
of positions, so ``log_softmax`` never holds a second copy.

Masking: padded and uncounted positions are removed with ``torch.where``, never multiplied by 0 —
a single inf or NaN at a padded position (low precision, a fully masked row) would otherwise turn
a language's whole sum into NaN.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Float64, Int64
from torch import Tensor

from ..progress import track
from ..tokens import Batch, encode, pad_id, right_pad
from .conditions import under

# Rows × vocabulary entries per cross-entropy chunk (64 MiB of float32): bounds the temporaries.
CE_CHUNK_ELEMENTS = 1 << 24
# The most float32 logits one forward pass may hold (rows are grouped to stay within it).
LOGITS_BUDGET_BYTES = 1 << 29


def token_nll(model, tokens: Int64[Tensor, "batch pos"], attention_mask: Int64[Tensor, "batch pos"]
              ) -> Float[Tensor, "batch pos_minus_1"]:
    """NLL (float32) of each token ``t ≥ 1`` given the tokens ``< t``; padded positions hold
    whatever the model computed there (mask them with :func:`masked_sum`).

    The rows go through the model in groups small enough that one group's ``[rows, pos, vocab]``
    float32 logits fit in :data:`LOGITS_BUDGET_BYTES`: a batch of 16 × 128 tokens of a
    262,144-token vocabulary would otherwise hold 2 GiB of logits at once. Which rows share a
    forward pass changes a row's NLL only by float rounding (``tests/test_real.py`` checks 1e-4).
    """
    device = model.cfg.device  # the input embedding's device
    tokens, attention_mask = tokens.to(device), attention_mask.to(device)
    B, T = tokens.shape
    V = int(model.cfg.d_vocab)
    rows = max(1, LOGITS_BUDGET_BYTES // max(T * V * 4, 1))
    out = None
    for r0 in range(0, B, rows):
        r1 = min(r0 + rows, B)
        logits = model(tokens[r0:r1], attention_mask=attention_mask[r0:r1], return_type="logits")
        # the NLL is taken where the logits are (on a dispatched model, the unembedding's device,
        # which need not be the embedding's): only the targets move, never the logits
        if out is None:
            out = torch.empty((B, T - 1), dtype=torch.float32, device=logits.device)
        _cross_entropy_into(out[r0:r1], logits, tokens[r0:r1, 1:].to(logits.device))
        del logits
    return out if out is not None else torch.empty((B, T - 1), dtype=torch.float32, device=device)


def _cross_entropy_into(out: Tensor, logits: Tensor, targets: Tensor) -> None:
    """``out[:, t] = CE(logits[:, t], targets[:, t])``, a chunk of positions at a time."""
    b, T1 = targets.shape
    V = logits.shape[-1]
    step = max(1, CE_CHUNK_ELEMENTS // max(b * V, 1))
    for s in range(0, T1, step):
        e = min(s + step, T1)
        out[:, s:e] = F.cross_entropy(logits[:, s:e].reshape(-1, V).float(), targets[:, s:e].reshape(-1),
                                      reduction="none").reshape(b, e - s)


def masked_sum(values: Float[Tensor, "*shape"], mask: Bool[Tensor, "*shape"]) -> Float64[Tensor, ""]:
    """The float64 sum of ``values`` where ``mask`` holds (elsewhere nothing, even inf or NaN)."""
    mask = mask.to(values.device)
    return torch.where(mask, values.double(), torch.zeros((), dtype=torch.float64, device=values.device)).sum()


def nll_sums(model, batches: list[Batch], n_langs: int, items: list, positions="all", desc: str = "nll",
             progress: bool = True) -> tuple[Float64[Tensor, " lang"], Float64[Tensor, " lang"]]:
    """Summed NLL and the number of counted targets per language over ``batches``, under ``items``.

    The targets are tokens 1..n of each row — the recorder's counted tokens (never BOS, never
    padding).
    """
    sums = torch.zeros(n_langs, dtype=torch.float64)
    counts = torch.zeros(n_langs, dtype=torch.float64)
    with torch.no_grad(), under(model, items, positions) as handle:
        for b in track(batches, desc, progress, "batch"):
            if handle is not None:
                handle.reset()
            nll = token_nll(model, b.tokens, b.attention_mask)
            w = b.counted[:, 1:]
            sums[b.language] += float(masked_sum(nll, w))
            counts[b.language] += float(w.sum())
    return sums, counts


def continuation(model, context: str, text: str, sep: str = " ") -> tuple[list[int], list[int]]:
    """``(context tokens with BOS, continuation tokens)`` of ``context`` completed by ``sep + text``
    (:func:`split_continuation` with the model's tokenizer)."""
    return split_continuation(model.tokenizer, context, text, sep)


def split_continuation(tokenizer, context: str, text: str, sep: str = " ") -> tuple[list[int], list[int]]:
    """``(context tokens with BOS, continuation tokens)`` of ``context`` completed by ``sep + text``.

    The whole string is tokenized once and split where the context's tokens end (as
    lm-evaluation-harness does); if the tokenizer merges across that boundary, the continuation is
    tokenized on its own.
    """
    ctx = encode(tokenizer, context)
    whole = encode(tokenizer, context + sep + text)
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, list(tokenizer(sep + text, add_special_tokens=False)["input_ids"])


def sequence_logprobs(model, seqs: list[tuple[list[int], list[int]]], items: list, positions="all",
                      batch_size: int = 32, desc: str = "logprob", progress: bool = True) -> list[float]:
    """Summed log-probability of each continuation given its context, under ``items``.

    With ``positions`` other than ``all`` the prompt length differs per row, so each row runs on its
    own with the handle told its context length.
    """
    out = [0.0] * len(seqs)
    bs = batch_size if positions == "all" else 1
    order = sorted(range(len(seqs)), key=lambda i: -(len(seqs[i][0]) + len(seqs[i][1])))
    with torch.no_grad(), under(model, items, positions) as handle:
        for start in track(range(0, len(order), bs), desc, progress, "sequence",
                           size=lambda s: min(bs, len(order) - s)):
            idx = order[start:start + bs]
            full = [seqs[i][0] + seqs[i][1] for i in idx]
            tokens, mask = right_pad(full, pad_id(model.tokenizer))
            target = torch.zeros((len(idx), tokens.shape[1] - 1), dtype=torch.bool)
            for r, i in enumerate(idx):
                target[r, len(seqs[i][0]) - 1:len(full[r]) - 1] = True  # predictions of the continuation
            if handle is not None:
                handle.reset(len(seqs[idx[0]][0]) if bs == 1 else None)
            nll = token_nll(model, tokens, mask)
            for r, i in enumerate(idx):
                out[i] = -float(masked_sum(nll[r], target[r]))
    return out
