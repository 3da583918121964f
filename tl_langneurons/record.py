"""Record per-language neuron statistics by streaming a corpus through the model's hooks.

Nothing but running sums is kept: each hook call reduces its ``[batch, pos, d_mlp]`` activation
to per-neuron sums over the counted tokens of the batch (the rows of real tokens are gathered, so
a NaN at a padded position can never reach a sum) and drops it. The forward pass is cut short by
the last layer's hook, so nothing after the last MLP — in particular the unembedding — is ever
computed.

Rules (methods page: [sites](methods.md#sites), [which tokens count](methods.md#tokens),
[statistics](methods.md#statistics); :mod:`.tokens` has the BOS and padding policy): BOS and padding never count.
Per-batch sums are taken in float32 and added into float64 accumulators in a fixed order, so a
resumed run is bit-identical to an uninterrupted one.

On a GPU the accumulators live on the device of the activations they sum (each layer's own, on a
model dispatched over several devices) and are added to in place: no hook moves anything to the
host or to another device, so nothing forces a synchronisation inside the forward pass. They come
to the host once at the end and at each checkpoint.
"""

import hashlib
import json
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float64
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from . import _checks
from ._io import package_version, texts_hash
from .corpus import Corpus
from .errors import LangNeuronsError
from .examples import DEFAULT_CONTEXT, TopKAccumulator, check_context, check_units, finish
from .identity import fingerprint
from .importance import DEFAULT_TOP_RATE, IMPORTANCE_TENSORS, ImportanceSums, down_norms
from .models import StopForward, forward_until
from .resume import key_changes, normal_key
from .stats import NeuronStats
from .tokens import Batch, encode, max_length, prepare_batches, tokenizer_of
from .progress import stage
from .units import Site, check_site


def default_histogram_edges() -> Float64[Tensor, " edge"]:
    """201 edges from -5 to 5 (bins of 0.05); values outside fall into the two open-ended bins."""
    return torch.linspace(-5.0, 5.0, 201, dtype=torch.float64)


class Accumulator:
    """The running sums of a recording, each layer's on the device of that layer's activations,
    and the hooks that add to them.

    A running statistic in the sense of baukit's ``runningstats``: :meth:`state_dict` /
    :meth:`load_state_dict` checkpoint it, and two accumulators of disjoint text add up.

    ``devices`` is one device for every layer, or one per layer (``site.devices`` from
    :func:`~.models.check_site`): on a model dispatched over several GPUs, layer ``l``'s sums
    live where layer ``l`` computes, so no hook copies an activation to another device.
    """

    def __init__(self, n_langs: int, site: Site, n_sentences: int, sentence_means: bool, edges: Tensor | None,
                 device: Any = "cpu", top: TopKAccumulator | None = None,
                 importance: ImportanceSums | None = None, bos_in_sentence_means: bool = False):
        L, I = site.n_layers, site.d_mlp
        per_layer = [device] * L if isinstance(device, (str, torch.device)) else list(device)
        if len(per_layer) != L:
            raise LangNeuronsError(f"the accumulator needs one device per layer ({L}), got {len(per_layer)}")
        self.site, self.devices = site, [torch.device(d) for d in per_layer]
        self.n_tokens = torch.zeros(n_langs, dtype=torch.float64)  # counted on the host, from the batch masks

        def zeros(*shape):
            return [torch.zeros(n_langs, *shape, dtype=torch.float64, device=d) for d in self.devices]

        self.count_pos, self.sum, self.sum_sq = zeros(I), zeros(I), zeros(I)
        # per-sentence means are as large as the corpus: they stay on the host, written once per batch
        self.sentence_means = torch.zeros(n_sentences, L, I, dtype=torch.float32) if sentence_means else None
        self.edges = None if edges is None else {d: edges.to(d) for d in set(self.devices)}
        self.hist = None if edges is None else zeros(I, len(edges) + 1)
        self._batch: Batch | None = None
        self._rows: dict = {}  # device → flat indices of the counted tokens there
        self._counted: dict = {}  # device → [batch, pos] mask (sentence means)
        self._row_tokens: dict = {}  # device → counted tokens per row (sentence means)
        self._row_means: list = [None] * L  # layer → each part's [batch, width] of the current batch
        self.bos_in_sentence_means = bos_in_sentence_means  # Kojima: BOS counts in a sentence's mean
        self._n_parts = sum(len(p) for p in site.parts)  # hooks per forward pass; the last one stops it
        self._fired = 0
        self.stops = True  # False where a later hook (PLND's at hook_post) ends the forward pass instead
        self.importance = importance  # PLND sums (:mod:`.importance`), read at hook_post by their own hooks
        self.top = top  # top-activating examples (examples.py), fed from the same hooks
        self._top_parts: list = [None] * L  # layer → each part's units, until the layer is whole (top examples)

    _TOP = "top."  # prefix of the top examples' tensors in a checkpoint

    def state_dict(self) -> dict[str, Tensor]:
        """The sums, on the host, as ``[lang, layer, ...]`` tensors (and the top examples' state)."""
        out = {k: v.detach().to("cpu").contiguous() for k, v in self._tensors().items()}
        if self.top is not None:
            out.update({self._TOP + k: v for k, v in self.top.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if self.top is not None:
            self.top.load_state_dict({k[len(self._TOP):]: v for k, v in state.items() if k.startswith(self._TOP)})
        for name, tensor in self._tensors().items():
            if name not in state or state[name].shape != tensor.shape:
                raise LangNeuronsError(f"the checkpoint's {name!r} does not fit this recording")
            if name in IMPORTANCE_TENSORS:
                continue
            target = getattr(self, name)
            if isinstance(target, list):  # per-layer tensors: layer l is [:, l]
                for layer, t in enumerate(target):
                    t.copy_(state[name][:, layer])
            else:
                target.copy_(state[name])
        if self.importance is not None:
            self.importance.load(state)

    def _tensors(self) -> dict[str, Tensor]:
        """Every statistic as one tensor (the per-layer ones stacked on the host)."""
        def stacked(per_layer):
            return torch.stack([t.to("cpu") for t in per_layer], 1)

        out = {"n_tokens": self.n_tokens, "count_pos": stacked(self.count_pos), "sum": stacked(self.sum),
               "sum_sq": stacked(self.sum_sq)}
        if self.sentence_means is not None:
            out["sentence_means"] = self.sentence_means
        if self.hist is not None:
            out["hist"] = stacked(self.hist)
        if self.importance is not None:
            out.update(self.importance.tensors())
        return out

    def start_batch(self, batch: Batch) -> None:
        """The batch's masks, moved once to each device a layer computes on."""
        self._batch = batch
        rows = batch.counted.reshape(-1).nonzero().squeeze(1)
        self._rows = {d: rows.to(d, non_blocking=True) for d in set(self.devices)}
        self.n_tokens[batch.language] += float(batch.counted.sum())
        self._fired = 0
        if self.importance is not None:
            self.importance.start_batch(batch.language, batch.counted, self._rows)
        if self.top is not None:
            self.top.start_batch(batch)
            self._top_parts = [[None] * len(parts) for parts in self.site.parts]
        if self.sentence_means is not None:
            counted = batch.counted
            if self.bos_in_sentence_means:  # one sentence per row: its BOS, where there is one, is at 0
                counted = counted | (batch.attention_mask.bool() & (torch.arange(counted.shape[1]) == 0))
            per_row = counted.sum(1).clamp_min(1).to(torch.float32)
            self._row_tokens = {d: per_row.to(d) for d in set(self.devices)}
            self._counted = {d: counted.to(d) for d in set(self.devices)}
            self._row_means = [[None] * len(parts) for parts in self.site.parts]

    def end_batch(self) -> None:
        if self.sentence_means is not None:  # one copy per layer and batch, after the forward pass
            rows = [(m[0] if len(m) == 1 else torch.cat(m, -1)).cpu() for m in self._row_means]
            self.sentence_means[self._batch.sentence_ids] = torch.stack(rows, 1)

    def hook(self, layer: int, part: int = 0):
        """The hook that adds part ``part`` of layer ``layer``'s units (its columns of the sums); the
        last of a forward pass's hooks to fire stops it."""
        dev = self.devices[layer]
        p = self.site.parts[layer][part]
        cols = slice(None) if len(self.site.parts[layer]) == 1 else slice(p.offset, p.offset + p.width)

        def fn(act: Tensor, hook: Any = None) -> None:
            if act.device != dev:  # the device check_site saw; anything else would be a silent copy
                raise LangNeuronsError(f"layer {layer}'s activation is on {act.device}, its sums on {dev}: the "
                                       "model moved after the recording started")
            a = p.read(act).to(torch.float32)  # [B, T, width]
            k = self._batch.language
            x = a.reshape(-1, a.shape[-1])[self._rows[dev]]  # the counted tokens only (a gather)
            self.count_pos[layer][k, cols] += (x > 0).sum(0, dtype=torch.float32)
            self.sum[layer][k, cols] += x.sum(0)
            self.sum_sq[layer][k, cols] += (x * x).sum(0)
            if self.sentence_means is not None:
                masked = torch.where(self._counted[dev][..., None], a, torch.zeros((), device=a.device))
                self._row_means[layer][part] = masked.sum(1) / self._row_tokens[dev][:, None]
            if self.hist is not None:
                edges = self.edges[dev]
                nb = len(edges) + 1
                b = torch.bucketize(x.double(), edges, right=True)  # 0 below edges[0], len(edges) from edges[-1] up
                flat = b + torch.arange(x.shape[1], device=x.device) * nb
                self.hist[layer][k, cols] += torch.bincount(flat.reshape(-1), minlength=x.shape[1] * nb).reshape(-1, nb)
            if self.top is not None:
                if len(self.site.parts[layer]) == 1:
                    self.top.add(layer, k, a, x)
                else:  # the top examples read a whole layer's units: fed once its last part has come
                    held = self._top_parts[layer]
                    held[part] = a
                    if all(h is not None for h in held):
                        whole = torch.cat(held, -1)
                        self.top.add(layer, k, whole, whole.reshape(-1, whole.shape[-1])[self._rows[dev]])
                        self._top_parts[layer] = [None] * len(held)
            self._fired += 1
            if self.stops and self._fired == self._n_parts:
                raise StopForward
        return fn


# ---------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file holding the sums *and* how many batches they contain (in its
# metadata), written to a temporary name and renamed. A kill at any moment leaves either the old
# checkpoint or the new one, never new sums beside an old count.

_CKPT = "checkpoint.safetensors"


def _ckpt_path(d: Path, rank: int) -> Path:
    return d / f"rank{rank}.{_CKPT}"


def save_checkpoint(d: Path, acc: Accumulator, done: int, key: dict, rank: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = _ckpt_path(d, rank)
    tmp = path.with_name(path.name + ".tmp")
    save_file(acc.state_dict(), str(tmp), metadata={"batches_done": str(done), "key": json.dumps(key, sort_keys=True)})
    os.replace(tmp, path)
    return path


def load_checkpoint(d: Path, acc: Accumulator, key: dict, rank: int) -> int:
    """Load the checkpoint into ``acc``; the number of batches it holds (0 if there is none)."""
    path = _ckpt_path(d, rank)
    if not path.is_file():
        return 0
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            old = json.loads(meta.get("key", "null"))
            changes = key_changes(old, normal_key(key)) if isinstance(old, dict) else ["the key"]
            if changes:
                raise LangNeuronsError(f"checkpoint in {str(d)!r} is from a different recording: "
                                       f"{'; '.join(changes[:4])} changed; record again without resume "
                                       "(--overwrite)")
            acc.load_state_dict({name: f.get_tensor(name) for name in f.keys()})
            done = int(meta["batches_done"])
    except LangNeuronsError:
        raise
    except Exception as e:  # a torn or damaged file: safetensors' own errors, bad metadata
        raise LangNeuronsError(f"checkpoint {str(path)!r} is damaged ({type(e).__name__}); record again without "
                               "resume (--overwrite)") from None
    return done


# ---------------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` under ``torch.distributed``; ``(0, 1)`` otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _histogram_edges(histogram_edges) -> Tensor | None:
    if histogram_edges is True:
        return default_histogram_edges()
    if histogram_edges is None or histogram_edges is False:
        return None
    edges = torch.as_tensor(histogram_edges, dtype=torch.float64)
    if edges.ndim != 1 or len(edges) < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise LangNeuronsError("histogram_edges must be a strictly increasing 1-D sequence of at least 2 values")
    return edges


def record(
    model: Any,
    corpus: Corpus | dict[str, list[str]],
    site: str = "act",
    batch_size: int = 32,
    max_sentences: int | None = None,
    sentence_means: bool = False,
    bos_in_sentence_means: bool = False,
    histogram_edges: Tensor | bool | None = None,
    pack: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    progress: bool = True,
    top_examples: int | None = None,
    top_units: Any = None,
    top_context: Sequence[int] = DEFAULT_CONTEXT,
    plnd: bool = False,
    plnd_top_rate: float = DEFAULT_TOP_RATE,
) -> NeuronStats:
    """Stream ``corpus`` through ``model`` and return per-language :class:`NeuronStats`.

    Args:
        model: a TransformerLens ``TransformerBridge`` (from :func:`load_model`) or ``HookedTransformer``.
        corpus: a :class:`Corpus` or ``{language: [sentences]}``.
        site: ``act`` (default), ``pre``, ``post``, a linear output (``q`` … ``down``, ``linear``
            for all), ``sae:DIR`` or any registered unit kind (see :mod:`tl_langneurons.units`).
        batch_size: sentences per forward pass.
        max_sentences: use only the first N sentences of each language.
        sentence_means: also keep each sentence's mean activation (needed by average precision and
            by "set to the median/max of sentence means").
        bos_in_sentence_means: count the BOS token in each sentence's mean, as Kojima et al. did
            (default: BOS never counts). Token statistics are unchanged either way.
        histogram_edges: also keep per-neuron histograms with these bin edges (``True`` = defaults),
            from which :meth:`NeuronStats.quantile` reads medians and quantiles.
        pack: instead of one sentence per sequence, concatenate each language's sentences into
            windows of this many tokens (Tang et al. pack text into 4096-token rows). The BOS and
            EOS tokens the packer inserts are not counted.
        checkpoint_dir / checkpoint_every / resume: write the running sums every N batches; with
            ``resume=True`` continue from the last checkpoint. The result is bit-identical. The
            checkpoint's key holds the model's weights hash, the corpus *content* and every option;
            a checkpoint of another recording is refused, naming what changed. The checkpoint is
            left in place: remove it once the statistics are saved.
        progress: show a progress bar per language.
        top_examples: also keep, per unit and language, this many top-activating examples with the
            sentence and position they occurred at (:mod:`tl_langneurons.examples`; memory
            ``k × units × languages × (16 + 4 × (before + 1 + after))`` bytes, independent of the
            corpus); they come back as ``stats.top_examples`` and are saved with the statistics.
        top_units: the units whose examples are kept: ``(layer, index)`` pairs or a
            :class:`LanguageNeurons` (the union of its sets); ``None`` = every unit.
        top_context: ``(before, after)``: the unit's activations kept on the tokens around each
            example (default 8 before, 4 after), for showing it in context.
        plnd: also accumulate PLND importance (Zhao et al. 2024; :mod:`.importance`) in the same pass,
            read at ``hook_post`` whatever the site: ``importance_sum``, ``importance_docs``,
            ``n_documents``.
        plnd_top_rate: the share of each layer's neurons counted as activated by a document (0.14).

    Under ``torch.distributed`` (e.g. ``torchrun``), the processes form the same batches and each
    takes every W-th of them; the sums are all-reduced at the end and every process returns the
    total.
    """
    texts = _checks.texts_of(corpus)
    corpus_spec = corpus.spec if isinstance(corpus, Corpus) else {"source": "in-memory"}
    batch_size = _checks.positive_int("batch_size", batch_size)
    checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)
    max_sentences = _checks.positive_int("max_sentences", max_sentences, allow_none=True)
    pack = _checks.integer("pack", pack, 2, allow_none=True)
    _checks.boolean("sentence_means", sentence_means)
    _checks.boolean("resume", resume)
    _checks.boolean("plnd", plnd)
    _checks.boolean("bos_in_sentence_means", bos_in_sentence_means)
    if bos_in_sentence_means and not sentence_means:
        raise LangNeuronsError("bos_in_sentence_means=True needs sentence_means=True")
    if pack is not None and sentence_means:
        raise LangNeuronsError("sentence_means needs one sentence per sequence; it cannot be combined with pack")
    top_examples = _checks.positive_int("top_examples", top_examples, allow_none=True)
    if top_examples is None and top_units is not None:
        raise LangNeuronsError("top_units chooses whose top examples are kept; give top_examples=K too")
    top_context = check_context(top_context)
    if pack is not None and top_examples is not None:
        raise LangNeuronsError("top_examples locates each example by sentence; it cannot be combined with pack")
    if resume and checkpoint_dir is None:
        raise LangNeuronsError("resume=True needs a checkpoint_dir")
    if not texts:
        raise LangNeuronsError("the corpus holds no languages")

    resolved = check_site(model, site)
    if plnd and resolved.kind not in ("act", "pre", "post"):
        # PLND scores MLP neurons (at hook_post); beside other units its sums would not line up
        raise LangNeuronsError(f"plnd=True scores MLP neurons; record it at site act, pre or post, not {site!r}")
    tokenizer = tokenizer_of(model)
    max_len = max_length(model)
    if pack is not None and pack > max_len:
        raise LangNeuronsError(f"pack={pack} is longer than the model's context ({max_len})")
    rank, world = dist_info()
    device = model.cfg.device

    languages = list(texts)
    batches, n_sent, truncated, bos_prepended = prepare_batches(
        tokenizer, texts, batch_size, max_len, max_sentences, pack, rank, world)
    edges = _histogram_edges(histogram_edges)
    importance = None
    if plnd:
        importance = ImportanceSums(len(languages), down_norms(model), list(resolved.devices), plnd_top_rate)
    top = None
    if top_examples is not None:
        firsts = [sum(list(n_sent.values())[:k]) for k in range(len(languages))]
        top = TopKAccumulator(len(languages), check_units(top_units, resolved.n_layers, resolved.d_mlp), top_examples,
                              top_context, firsts, max_len, list(resolved.devices))
    acc = Accumulator(len(languages), resolved, sum(n_sent.values()), sentence_means, edges, resolved.devices, top,
                      importance, bos_in_sentence_means)

    fp = fingerprint(model)
    options = {"batch_size": batch_size, "max_sentences": max_sentences, "pack": pack,
               "sentence_means": sentence_means, "bos_in_sentence_means": bos_in_sentence_means,
               "histogram": edges is not None,
               "bos_prepended": bos_prepended, "special_tokens_counted": False, "world_size": world}
    # the corpus by its content (what is recorded), not only by where it was read from
    if plnd:
        options["plnd_top_rate"] = float(plnd_top_rate)
    if top is not None:  # in the checkpoint key only when asked for: older checkpoints still resume
        options["top_examples"] = {"k": top_examples, "context": list(top_context),
                                   "units": hashlib.sha256(top.units.numpy().tobytes()).hexdigest()[:16]}
    key = {"model": fp["weights_hash"], "site": site, "languages": languages,
           "corpus": json.dumps(corpus_spec, sort_keys=True, default=str),
           "corpus_content": texts_hash({k: v[:max_sentences] for k, v in texts.items()}),
           "n_batches": len(batches), "options": options}
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    done = load_checkpoint(ckpt, acc, key, rank) if resume else 0
    if done and progress and rank == 0:
        import sys

        print(f"resuming record: {done} of {len(batches)} batches already done", file=sys.stderr)

    hooks = [(p.hook, acc.hook(l, i)) for l, parts in enumerate(resolved.parts) for i, p in enumerate(parts)]
    if plnd:
        # the forward pass stops at the last hook that fires: hook_post comes after the site's hook_pre
        acc.stops = False
        hooks += [(f"blocks.{l}.mlp.hook_post", importance.hook(l, StopForward() if l == resolved.n_layers - 1
                                                                  else None))
                  for l in range(resolved.n_layers)]
    # one bar over every batch of every language (a resumed run's bar starts where it left off)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks), stage("record", len(batches), "batch",
                                                              progress and rank == 0) as bar:
        bar.advance(done)
        for i, batch in enumerate(batches):
            if i >= done:
                acc.start_batch(batch)
                forward_until(model, batch.tokens.to(device), batch.attention_mask)
                acc.end_batch()
                if ckpt is not None and (i + 1) % checkpoint_every == 0 and i + 1 < len(batches):
                    save_checkpoint(ckpt, acc, i + 1, key, rank)
                bar.advance(1)

    state = acc.state_dict() if world == 1 else _all_reduce(acc, device)
    top_result = None
    if top is not None:
        if world > 1:
            _gather_top(top, device)
        # the sentences as prepare_batches numbered them: non-blank, the first max_sentences
        kept = {lang: [s for s in texts[lang] if s.strip()][:max_sentences] for lang in languages}
        top_result = finish(top.state_dict(), top, languages, site, kept, tokenizer,
                            lambda text: encode(tokenizer, text)[:max_len],
                            {"model": fp, "corpus": corpus_spec, "n_sentences": n_sent,
                             "bos_prepended": bos_prepended, "package_version": package_version()})
    meta = {"model": fp, "corpus": corpus_spec, "n_sentences": n_sent, "truncated_sentences": truncated,
            "options": options, "units": {"kind": resolved.kind, "layout": resolved.layout(), **resolved.info},
            "package_version": package_version()}
    sl = None
    if sentence_means:
        sl = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(n_sent.values())])
    stats = NeuronStats(languages, site, state["n_tokens"], state["count_pos"], state["sum"], state["sum_sq"],
                        state.get("sentence_means"), sl, state.get("hist"), edges, meta, top_result,
                        **{k: state.get(k) for k in IMPORTANCE_TENSORS})
    # the checkpoint stays: the caller drops it once the statistics are saved (the command line's
    # result folder does so when it commits), so a failed save never loses the recording
    return stats


def _all_reduce(acc: Accumulator, device: Any) -> dict[str, Tensor]:
    """Every process's sums added up (on the GPU with NCCL, on the host with gloo)."""
    import torch.distributed as dist

    on_gpu = str(device).startswith("cuda")
    out = {}
    for name, t in acc.state_dict().items():
        if name.startswith(acc._TOP):  # not sums: merged by _gather_top
            continue
        moved = t.to(device) if on_gpu else t
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        out[name] = moved.cpu()
    return out


def _gather_top(top: TopKAccumulator, device: Any) -> None:
    """Every process's top examples merged into each (exact: a top-k under a strict order)."""
    import torch.distributed as dist

    on_gpu = str(device).startswith("cuda")
    mine = top.state_dict()
    world = dist.get_world_size()
    for rank in range(world):
        theirs = {}
        for name, t in mine.items():
            buf = (t.to(device) if on_gpu else t).clone()
            dist.broadcast(buf, src=rank)
            theirs[name] = buf.cpu()
        if rank != dist.get_rank():
            top.merge_state(theirs)
