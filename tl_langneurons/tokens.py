"""Text → token batches: the one BOS and padding policy of the package.

* A sentence is one sequence: the tokenizer's BOS (if it has one) followed by the sentence's
  tokens (``add_special_tokens=False``), truncated to the model's context.
* The *counted* tokens — those that enter statistics and whose NLL is measured — are the
  sentence's own tokens: never BOS, never padding. In packed mode (Tang et al. pack text into long
  rows) the BOS and EOS tokens the packer inserts are not counted either; the text's own tokens are
  counted exactly as in unpacked mode.
* Padding uses the tokenizer's pad token, else its EOS, else 0; padded positions are masked and
  never counted, so the pad value never changes a result.
* Batches are length-sorted (longest first, ties by corpus order), right-padded, with an
  attention mask; generation prompts are left-padded (:func:`left_pad`) so that every row's prompt
  ends at the same column.
* Distributed: every process forms exactly the batches one process would, and process ``r`` of
  ``W`` takes batches ``r, r + W, …``. Each batch's float32 sums are then bit-identical to a
  single process's, and only the float64 additions differ in order.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Int64
from torch import Tensor

from .errors import LangNeuronsError


@dataclass(frozen=True)
class Batch:
    language: int  # index into the batched languages
    tokens: Int64[Tensor, "batch pos"]
    attention_mask: Int64[Tensor, "batch pos"]
    counted: Bool[Tensor, "batch pos"]  # real tokens that enter the statistics (no BOS, no padding)
    sentence_ids: Int64[Tensor, " batch"]  # global sentence index of each row (-1 in packed mode)


class Prepared(NamedTuple):
    batches: list[Batch]
    n_sentences: dict[str, int]  # sentences per language (0 in packed mode)
    truncated: int  # sentences cut at the model's context
    bos_prepended: bool


def bos_id(tokenizer: Any) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None)
    return None if bos is None else int(bos)


def pad_id(tokenizer: Any) -> int:
    for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if v is not None:
            return int(v)
    return 0


def encode(tokenizer: Any, text: str) -> list[int]:
    """BOS (if the tokenizer has one) + the text's tokens."""
    bos = bos_id(tokenizer)
    return ([] if bos is None else [bos]) + list(tokenizer(text, add_special_tokens=False)["input_ids"])


def max_length(model: Any) -> int:
    """The model's context length (2048 if it states none)."""
    return int(getattr(model.cfg, "n_ctx", 2048) or 2048)


def tokenizer_of(model: Any) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise LangNeuronsError("the model has no tokenizer; load it with load_model or pass one to the bridge")
    return tok


def right_pad(seqs: list[list[int]], pad: int) -> tuple[Int64[Tensor, "batch pos"], Int64[Tensor, "batch pos"]]:
    """``(tokens, attention_mask)`` with each row's tokens first and padding after."""
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(seqs), T), dtype=torch.int64)
    for r, s in enumerate(seqs):
        tokens[r, :len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[r, :len(s)] = 1
    return tokens, mask


def left_pad(seqs: list[list[int]], pad: int) -> tuple[Int64[Tensor, "batch pos"], Int64[Tensor, "batch pos"]]:
    """``(tokens, attention_mask)`` with padding first, so every row ends at the last column."""
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(seqs), T), dtype=torch.int64)
    for r, s in enumerate(seqs):
        tokens[r, T - len(s):] = torch.tensor(s, dtype=torch.int64)
        mask[r, T - len(s):] = 1
    return tokens, mask


def _sentences(tokenizer: Any, sentences: list[str], max_len: int) -> tuple[list[list[int]], list[list[bool]], int]:
    """One sequence per sentence: ids, which of them count, and how many were truncated."""
    bos = bos_id(tokenizer)
    seqs, counted, truncated = [], [], 0
    for x in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
        seq = ([] if bos is None else [bos]) + list(x)
        if len(seq) > max_len:
            seq, truncated = seq[:max_len], truncated + 1
        seqs.append(seq)
        counted.append([bos is None or i > 0 for i in range(len(seq))])
    return seqs, counted, truncated


def _packed(tokenizer: Any, sentences: list[str], window: int) -> tuple[list[list[int]], list[list[bool]]]:
    """The sentences concatenated (EOS between them, if the tokenizer has one) into windows of
    ``window`` tokens, each starting with BOS; the inserted BOS and EOS are not counted."""
    bos, eos = bos_id(tokenizer), getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    own: list[bool] = []
    for x in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
        stream.extend(x)
        own.extend([True] * len(x))
        if eos is not None:
            stream.append(int(eos))
            own.append(False)
    body = window - (0 if bos is None else 1)
    head_ids, head_own = ([], []) if bos is None else ([bos], [False])
    seqs = [head_ids + stream[i:i + body] for i in range(0, len(stream), body)]
    counted = [head_own + own[i:i + body] for i in range(0, len(stream), body)]
    return seqs, counted


def _batches(seqs: list[list[int]], counted: list[list[bool]], first_sentence: int, language: int,
             batch_size: int, pad: int, packed: bool) -> list[Batch]:
    # Longest first: similar lengths share a batch (little padding), and memory peaks at once.
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        tokens, mask = right_pad([seqs[i] for i in idx], pad)
        flags = torch.zeros(tokens.shape, dtype=torch.bool)
        for r, i in enumerate(idx):
            flags[r, :len(counted[i])] = torch.tensor(counted[i], dtype=torch.bool)
        sids = torch.full((len(idx),), -1, dtype=torch.int64) if packed else \
            torch.tensor([first_sentence + i for i in idx], dtype=torch.int64)
        out.append(Batch(language, tokens, mask, flags, sids))
    return out


def prepare_batches(tokenizer: Any, texts: dict[str, list[str]], batch_size: int, max_len: int,
                    max_sentences: int | None = None, pack: int | None = None, rank: int = 0,
                    world: int = 1) -> Prepared:
    """Tokenize every language and cut it into length-sorted batches (this process's share of them).

    Shared by the recorder, the NLL and diffmean readers and the recording benchmark, so all see
    exactly the same batches.
    """
    pad = pad_id(tokenizer)
    batches: list[Batch] = []
    n_sent: dict[str, int] = {}
    truncated, first = 0, 0
    for k, (lang, sentences) in enumerate(texts.items()):
        sents = [s for s in sentences if s.strip()]
        if max_sentences is not None:
            sents = sents[:max_sentences]
        if not sents:
            raise LangNeuronsError(f"no sentences for language {lang!r}")
        if pack is None:
            seqs, counted, tr = _sentences(tokenizer, sents, max_len)
            truncated += tr
        else:
            seqs, counted = _packed(tokenizer, sents, pack)
        n_sent[lang] = 0 if pack is not None else len(seqs)
        batches += _batches(seqs, counted, first, k, batch_size, pad, pack is not None)
        first += n_sent[lang]
    return Prepared(batches[rank::world], n_sent, truncated, bos_id(tokenizer) is not None)
