"""Record per-language neuron statistics by streaming a corpus through the model's hooks.

Nothing but running sums is kept: each hook call reduces its ``[batch, pos, d_mlp]`` activation to
per-neuron sums over the real tokens of the batch (one GEMV each for count, sum and sum of squares)
and drops it. The forward pass is cut short by the last layer's hook, so nothing after the last
MLP — in particular the unembedding — is ever computed.

Rules (see METHODS §1–2): each sentence is one sequence, with the tokenizer's BOS prepended if it
has one; BOS and padding never count. Batches are length-sorted, right-padded, with an attention
mask. Per-batch sums are taken in float32 and added into float64 accumulators, in a fixed order,
so a resumed run is bit-identical to an uninterrupted one.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int64
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .corpus import Corpus
from .errors import LangNeuronsError
from .models import Site, check_site, fingerprint
from .stats import NeuronStats, atomic_write_text, package_version


class _StopForward(Exception):
    """Raised by the last layer's hook: everything after it is not needed."""


@dataclass(frozen=True)
class Batch:
    language: int  # index into the recorded languages
    tokens: Int64[Tensor, "batch pos"]
    attention_mask: Int64[Tensor, "batch pos"]
    counted: Bool[Tensor, "batch pos"]  # real tokens that enter the statistics (no BOS, no padding)
    sentence_ids: Int64[Tensor, " batch"]  # global sentence index of each row (-1 in packed mode)


def default_histogram_edges() -> Float[Tensor, " edge"]:
    """201 edges from -5 to 5 (bins of 0.05); values outside fall into the two open-ended bins."""
    return torch.linspace(-5.0, 5.0, 201, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Tokens → batches


def _tokenize(tokenizer: Any, sentences: list[str], max_len: int) -> tuple[list[list[int]], bool, int]:
    """Token ids per sentence with BOS prepended (if the tokenizer has one), truncated to ``max_len``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    out, truncated = [], 0
    for x in ids:
        seq = ([bos] if bos is not None else []) + list(x)
        if len(seq) > max_len:
            seq, truncated = seq[:max_len], truncated + 1
        out.append(seq)
    return out, bos is not None, truncated


def _pack(tokenizer: Any, sentences: list[str], window: int) -> list[list[int]]:
    """Concatenate the sentences (EOS between them, if the tokenizer has one) into windows of ``window`` tokens, each starting with BOS."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for x in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
        stream.extend(x)
        if eos is not None:
            stream.append(eos)
    body = window - (1 if bos is not None else 0)
    return [([bos] if bos is not None else []) + stream[i:i + body] for i in range(0, len(stream), body)]


def _batches(seqs: list[list[int]], first_sentence: int, language: int, batch_size: int, pad_id: int,
             skip_first: bool, special_ids: set[int], rank: int, world: int, packed: bool) -> list[Batch]:
    # Longest first: similar lengths share a batch (little padding), and memory peaks at once.
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    order = order[rank::world]  # distributed: a disjoint share per process
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = max(len(seqs[i]) for i in idx)
        tokens = torch.full((len(idx), T), pad_id, dtype=torch.int64)
        mask = torch.zeros((len(idx), T), dtype=torch.int64)
        for r, i in enumerate(idx):
            tokens[r, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, :len(seqs[i])] = 1
        counted = mask.bool()
        if skip_first:
            counted[:, 0] = False
        if packed and special_ids:
            counted &= ~torch.isin(tokens, torch.tensor(sorted(special_ids)))
        sids = torch.tensor([first_sentence + i for i in idx]) if not packed else torch.full((len(idx),), -1)
        out.append(Batch(language, tokens, mask, counted, sids))
    return out


def prepare_batches(tokenizer: Any, texts: dict[str, list[str]], batch_size: int, max_len: int,
                    max_sentences: int | None = None, pack: int | None = None, rank: int = 0, world: int = 1
                    ) -> tuple[list[Batch], dict[str, int], int, bool]:
    """Tokenize every language and cut it into length-sorted batches.

    Returns ``(batches, sentences per language, number of truncated sentences, BOS prepended?)``.
    Shared by :func:`record` and the recording benchmark, so both see exactly the same batches.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    languages = list(texts)
    batches: list[Batch] = []
    n_sent, truncated, bos_prepended = {}, 0, False
    for k, lang in enumerate(languages):
        sents = [s for s in texts[lang] if s.strip()]
        if max_sentences is not None:
            sents = sents[:max_sentences]
        if not sents:
            raise LangNeuronsError(f"no sentences for language {lang!r}")
        if pack is None:
            seqs, bos_prepended, tr = _tokenize(tokenizer, sents, max_len)
            truncated += tr
        else:
            seqs = _pack(tokenizer, sents, pack)
            bos_prepended = getattr(tokenizer, "bos_token_id", None) is not None
        first = sum(n_sent.values())
        n_sent[lang] = len(seqs) if pack is None else 0
        batches += _batches(seqs, first, k, batch_size, pad_id, pack is None and bos_prepended, special,
                            rank, world, pack is not None)
    return batches, n_sent, truncated, bos_prepended


# ---------------------------------------------------------------------------------------------
# Accumulators


class _Accumulator:
    """The running sums, and the hook functions that add to them."""

    def __init__(self, n_langs: int, site: Site, n_sentences: int, sentence_means: bool, edges: Tensor | None):
        L, I = site.n_layers, site.d_mlp
        self.site = site
        self.n_tokens = torch.zeros(n_langs, dtype=torch.float64)
        self.count_pos = torch.zeros(n_langs, L, I, dtype=torch.float64)
        self.sum = torch.zeros(n_langs, L, I, dtype=torch.float64)
        self.sum_sq = torch.zeros(n_langs, L, I, dtype=torch.float64)
        self.sentence_means = torch.zeros(n_sentences, L, I, dtype=torch.float32) if sentence_means else None
        self.edges = edges
        self.hist = torch.zeros(n_langs, L, I, len(edges) + 1, dtype=torch.float64) if edges is not None else None
        self.batch: Batch | None = None
        self._weights: Tensor | None = None  # counted mask as float, flattened [batch*pos]
        self._row_tokens: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        out = {"n_tokens": self.n_tokens, "count_pos": self.count_pos, "sum": self.sum, "sum_sq": self.sum_sq}
        if self.sentence_means is not None:
            out["sentence_means"] = self.sentence_means
        if self.hist is not None:
            out["hist"] = self.hist
        return out

    def set_batch(self, batch: Batch, device) -> None:
        self.batch = batch
        counted = batch.counted.to(device)
        self._counted = counted
        self._weights = counted.reshape(-1).to(torch.float32)
        self._row_tokens = counted.sum(1).clamp_min(1).to(torch.float32)
        self.n_tokens[batch.language] += float(batch.counted.sum())

    def hook(self, layer: int, last: bool):
        def fn(act: Tensor, hook: Any = None) -> None:
            a = self.site.read(act).to(torch.float32)  # [B, T, I]
            k = self.batch.language
            x = a.reshape(-1, a.shape[-1])
            w = self._weights
            # Sums over counted tokens as GEMVs: fast, and padding/BOS get weight 0.
            self.count_pos[k, layer] += (w @ (x > 0).to(torch.float32)).double().cpu()
            self.sum[k, layer] += (w @ x).double().cpu()
            self.sum_sq[k, layer] += (w @ (x * x)).double().cpu()
            if self.sentence_means is not None:
                per_row = (a * self._counted[..., None]).sum(1) / self._row_tokens[:, None]
                self.sentence_means[self.batch.sentence_ids, layer] = per_row.cpu()
            if self.hist is not None:
                sel = x[self._counted.reshape(-1)].double().cpu()
                nb = len(self.edges) + 1
                b = torch.bucketize(sel, self.edges, right=True)  # 0 below edges[0], len(edges) from edges[-1] up
                flat = b + torch.arange(sel.shape[1]) * nb
                self.hist[k, layer] += torch.bincount(flat.reshape(-1), minlength=sel.shape[1] * nb).reshape(-1, nb).double()
            if last:
                raise _StopForward
        return fn


# ---------------------------------------------------------------------------------------------
# Checkpoints: the accumulators plus how many batches are done, written atomically.

_CKPT_T, _CKPT_J = "checkpoint.safetensors", "checkpoint.json"


def _save_checkpoint(d: Path, acc: _Accumulator, done: int, key: dict, rank: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    t, j = d / f"rank{rank}.{_CKPT_T}", d / f"rank{rank}.{_CKPT_J}"
    save_file({k: v.contiguous() for k, v in acc.tensors().items()}, str(t) + ".tmp")
    os.replace(str(t) + ".tmp", t)
    # The JSON is written last: it names how many batches the tensor file holds.
    atomic_write_text(j, json.dumps({"batches_done": done, "key": key}))


def _load_checkpoint(d: Path, acc: _Accumulator, key: dict, rank: int) -> int:
    t, j = d / f"rank{rank}.{_CKPT_T}", d / f"rank{rank}.{_CKPT_J}"
    if not j.is_file() or not t.is_file():
        return 0
    info = json.loads(j.read_text())
    if info["key"] != key:
        raise LangNeuronsError(
            f"checkpoint in {str(d)!r} is from a different recording (model, corpus or options differ); "
            "remove it or record without resume"
        )
    saved = load_file(str(t))
    for name, tensor in acc.tensors().items():
        tensor.copy_(saved[name])
    return int(info["batches_done"])


# ---------------------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def record(
    model: Any,
    corpus: Corpus | dict[str, list[str]],
    site: str = "act",
    batch_size: int = 32,
    max_sentences: int | None = None,
    sentence_means: bool = False,
    histogram_edges: Tensor | bool | None = None,
    pack: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    progress: bool = True,
) -> NeuronStats:
    """Stream ``corpus`` through ``model`` and return per-language :class:`NeuronStats`.

    Args:
        model: a TransformerLens ``TransformerBridge`` (from :func:`load_model`) or ``HookedTransformer``.
        corpus: a :class:`Corpus` or ``{language: [sentences]}``.
        site: ``act`` (default), ``pre`` or ``post`` (see :mod:`tl_langneurons.models`).
        batch_size: sentences per forward pass.
        max_sentences: use only the first N sentences of each language.
        sentence_means: also keep each sentence's mean activation (needed by average precision and
            by "set to the median/max of sentence means").
        histogram_edges: also keep per-neuron histograms with these bin edges (``True`` = defaults),
            from which :meth:`NeuronStats.quantile` reads medians and quantiles.
        pack: instead of one sentence per sequence, concatenate each language's sentences into
            windows of this many tokens (Tang et al. pack text into 4096-token rows). Special tokens
            (BOS, EOS) are not counted.
        checkpoint_dir / checkpoint_every / resume: write the running sums every N batches; with
            ``resume=True`` continue from the last checkpoint. The result is bit-identical.
        progress: show a progress bar per language.

    Under ``torch.distributed`` (e.g. ``torchrun``), each process takes a disjoint share of each
    language's sentences and the sums are all-reduced at the end; every process returns the total.
    """
    if isinstance(corpus, Corpus):
        texts, corpus_spec = corpus.texts, corpus.spec
    elif isinstance(corpus, dict):
        texts, corpus_spec = corpus, {"source": "in-memory"}
    else:
        raise LangNeuronsError(f"corpus must be a Corpus or a dict of sentence lists, got {type(corpus).__name__}")
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise LangNeuronsError(f"{name} must be a positive integer, got {value!r}")
    if max_sentences is not None and (not isinstance(max_sentences, int) or max_sentences < 1):
        raise LangNeuronsError(f"max_sentences must be a positive integer or None, got {max_sentences!r}")
    if pack is not None and (not isinstance(pack, int) or pack < 2):
        raise LangNeuronsError(f"pack must be a window length ≥ 2 tokens or None, got {pack!r}")
    if pack is not None and sentence_means:
        raise LangNeuronsError("sentence_means needs one sentence per sequence; it cannot be combined with pack")
    if resume and checkpoint_dir is None:
        raise LangNeuronsError("resume=True needs a checkpoint_dir")
    if not texts:
        raise LangNeuronsError("the corpus holds no languages")

    resolved = check_site(model, site)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise LangNeuronsError("the model has no tokenizer; load it with load_model or pass one to the bridge")
    max_len = int(getattr(model.cfg, "n_ctx", 2048) or 2048)
    if pack is not None and pack > max_len:
        raise LangNeuronsError(f"pack={pack} is longer than the model's context ({max_len})")
    rank, world = _dist_info()
    device = model.cfg.device

    languages = list(texts)
    batches, n_sent, truncated, bos_prepended = prepare_batches(
        tokenizer, texts, batch_size, max_len, max_sentences, pack, rank, world)
    n_total = sum(n_sent.values())

    edges = None
    if histogram_edges is True:
        edges = default_histogram_edges()
    elif histogram_edges is not None and histogram_edges is not False:
        edges = torch.as_tensor(histogram_edges, dtype=torch.float64)
        if edges.ndim != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
            raise LangNeuronsError("histogram_edges must be a strictly increasing 1-D sequence of at least 2 values")
    acc = _Accumulator(len(languages), resolved, n_total, sentence_means, edges)

    fp = fingerprint(model)
    options = {"batch_size": batch_size, "max_sentences": max_sentences, "pack": pack,
               "sentence_means": sentence_means, "histogram": edges is not None,
               "bos_prepended": bos_prepended, "special_tokens_counted": False, "world_size": world}
    key = {"model": fp["weights_hash"], "site": site, "languages": languages, "corpus": json.dumps(corpus_spec, sort_keys=True, default=str),
           "n_batches": len(batches), "options": options}
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    done = _load_checkpoint(ckpt, acc, key, rank) if (resume and ckpt is not None) else 0

    hooks = [(name, acc.hook(l, l == resolved.n_layers - 1)) for l, name in enumerate(resolved.hook_names)]
    bars = {}
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for i, batch in enumerate(batches):
            if progress and rank == 0 and batch.language not in bars:
                for b in bars.values():
                    b.close()
                total = sum(1 for x in batches if x.language == batch.language)
                bars[batch.language] = tqdm(total=total, desc=f"record {languages[batch.language]}", leave=False)
            if i < done:
                if batch.language in bars:
                    bars[batch.language].update(1)
                continue
            acc.set_batch(batch, device)
            try:
                model(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device), return_type=None)
            except _StopForward:
                pass
            if batch.language in bars:
                bars[batch.language].update(1)
            if ckpt is not None and (i + 1) % checkpoint_every == 0 and i + 1 < len(batches):
                _save_checkpoint(ckpt, acc, i + 1, key, rank)
    for b in bars.values():
        b.close()

    if world > 1:
        import torch.distributed as dist

        for t in acc.tensors().values():
            moved = t.to(device) if str(device).startswith("cuda") else t
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            if moved is not t:
                t.copy_(moved.cpu())

    meta = {
        "model": fp,
        "corpus": corpus_spec,
        "n_sentences": n_sent,
        "truncated_sentences": truncated,
        "options": options,
        "package_version": package_version(),
    }
    sl = None
    if sentence_means:
        sl = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(n_sent.values())])
    stats = NeuronStats(languages, site, acc.n_tokens, acc.count_pos, acc.sum, acc.sum_sq,
                        acc.sentence_means, sl, acc.hist, edges, meta)
    if ckpt is not None:
        for name in (f"rank{rank}.{_CKPT_T}", f"rank{rank}.{_CKPT_J}"):
            (ckpt / name).unlink(missing_ok=True)
    return stats
