"""Top-activating examples: for each unit and language, the *k* tokens it fired on most, streamed.

An interpretability researcher trusts a neuron after reading what it fires on. The recorder keeps
only sums, so it cannot show that; this statistic keeps, per unit and language, the *k* highest
activations with where they occurred (sentence, token position) and the unit's activations on the
tokens around each (the *context window*), while the corpus streams through.

**Order.** Examples are ranked by activation, highest first; equal activations by sentence, then
by position, lowest first. That is a strict total order on a language's tokens, so "the top *k*" is
one well-defined set, and the top *k* of a union is the top *k* of the parts' top *k* — whatever
the batches, processes or resumes the text was cut into. Merges are therefore exact: a resumed or
a ``torchrun`` recording gives bit-identical tensors to one uninterrupted process. (The order is
computed on integers: each float32 activation is mapped to an int32 with the same order — ``-0.0``
is made ``+0.0`` first, so that it ties with ``+0.0`` as it compares — and combined with the rank
of its (sentence, position) key into one int64, so no ``topk`` tie is ever left to the kernel.)

**Memory** does not grow with the corpus: per language and unit, *k* entries of a float32
activation, an int64 key, an int32 token id and ``before + 1 + after`` float32 window activations,
i.e. ``k × units × languages × (16 + 4 × (before + 1 + after))`` bytes — with the defaults
(*k* = 20, 8 tokens before, 4 after) 1,360 bytes per unit and language: 5 MB for 369 neurons in
10 languages, 501 MB for all 36,864 MLP neurons of Gemma 3 270M in 10 languages (record a subset
of units, or ``context=(0, 0)``: 147 MB). Each layer's state lives on the device of that layer's
activations, like the recorder's sums.

**Texts.** Sentences are numbered within their language as the recorder numbers them (the
corpus's non-blank sentences, after ``max_sentences``); one sentence is one sequence, so packed
recordings (``pack=``) are refused. At the end of a recording, each sentence that holds an example
is tokenized again and its token ids, their texts and the sentence are stored, so the examples can
be shown without the model, the tokenizer or the corpus (checked: the re-tokenized token at every
example's position must be the token the model saw).
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float32, Int32, Int64
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import _checks
from ._io import atomic_write_text, package_version, sha256
from .errors import LangNeuronsError, choices

TOP_TENSORS = "top_examples.safetensors"
TOP_JSON = "top_examples.json"
TOP_FORMAT = "tl_langneurons.top_examples/1"
DEFAULT_K = 20
DEFAULT_CONTEXT = (8, 4)  # tokens of activation context kept before and after each example
EMPTY = torch.iinfo(torch.int64).max  # the key of a slot not filled yet: it loses every tie
_LOW = (1 << 32) - 1


def check_units(units, n_layers: int, d_mlp: int) -> Int64[Tensor, "unit 2"]:
    """``(layer, index)`` pairs (a :class:`~.neurons.LanguageNeurons` counts as the union of its
    sets) → a sorted, duplicate-free ``[unit, 2]`` tensor; ``None`` → every unit."""
    if units is None:
        layer = torch.arange(n_layers).repeat_interleave(d_mlp)
        return torch.stack([layer, torch.arange(d_mlp).repeat(n_layers)], 1)
    if hasattr(units, "union") and hasattr(units, "neurons"):  # a LanguageNeurons
        if (units.n_layers, units.d_mlp) != (n_layers, d_mlp):
            raise LangNeuronsError(f"the neuron set is for {units.n_layers} layers x {units.d_mlp} units, the model "
                                   f"has {n_layers} x {d_mlp}")
        units = units.union()
    pairs = set()
    for pair in units:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_checks.is_int(v) for v in pair):
            raise LangNeuronsError(f"top_units must be (layer, index) pairs of integers, got {pair!r}")
        if not (0 <= pair[0] < n_layers and 0 <= pair[1] < d_mlp):
            raise LangNeuronsError(f"unit {tuple(pair)!r} is outside the model's {n_layers} layers x {d_mlp} units")
        pairs.add((int(pair[0]), int(pair[1])))
    if not pairs:
        raise LangNeuronsError("top_units names no unit; give (layer, index) pairs, a neuron set, or None for all")
    return torch.tensor(sorted(pairs), dtype=torch.int64)


def check_context(context) -> tuple[int, int]:
    if not isinstance(context, (list, tuple)) or len(context) != 2:
        raise LangNeuronsError(f"top_context must be (tokens before, tokens after), got {context!r}")
    return (_checks.integer("top_context[0]", context[0], 0, 512), _checks.integer("top_context[1]", context[1], 0, 512))


def _ordered(v: Tensor) -> Tensor:
    """float32 → int64 with the same order (``-0.0`` first made ``+0.0``; NaN above +inf): a
    negative float's bits order backwards, so its 31 low bits are flipped."""
    b = (v + 0.0).contiguous().view(torch.int32)
    return (b ^ ((b >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _top(values: Tensor, low: Tensor, k: int) -> Tensor:
    """Indices (along the last dim) of the ``k`` largest ``values``; ties go to the higher ``low``
    (``2**32 - 1 - rank`` of the key: the lower key)."""
    return ((_ordered(values) << 32) + low).topk(k, dim=-1).indices


def merge_entries(a: dict[str, Tensor], b: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """The top ``k`` of two sets of entries (``value``, ``key``, ``token`` ``[..., n]`` and
    ``window`` ``[..., n, W]``) of the same units: exact, commutative and associative."""
    cat = {name: torch.cat([a[name], b[name]], dim=-2 if name == "window" else -1) for name in a}
    # the rank of each key among its unit's entries (keys are unique per unit, except EMPTY slots,
    # which are identical entries: whichever is kept, the result is the same)
    order = cat["key"].argsort(dim=-1)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order).contiguous())
    idx = _top(cat["value"], _LOW - rank, k)
    out = {name: cat[name].gather(-1, idx) for name in ("value", "key", "token")}
    out["window"] = cat["window"].gather(-2, idx[..., None].expand(*idx.shape, cat["window"].shape[-1]))
    return out


class TopKAccumulator:
    """The running top-*k* of a recording: one state per layer (on that layer's device), fed by the
    recorder's hooks through :meth:`start_batch` and :meth:`add`.

    A running statistic like the recorder's sums: :meth:`state_dict` / :meth:`load_state_dict`
    checkpoint it, :meth:`merge_state` merges two of disjoint text exactly.

    Args:
        n_langs: languages of the recording.
        units: ``[unit, 2]`` ``(layer, index)`` pairs, sorted (:func:`check_units`).
        k: examples kept per unit and language.
        context: activations kept before and after each example's position.
        first_sentence: the recorder's global index of each language's first sentence.
        max_len: positions are below this (the model's context); a key is ``sentence × max_len + position``.
        devices: one per layer.
    """

    def __init__(self, n_langs: int, units: Tensor, k: int, context: tuple[int, int], first_sentence: list[int],
                 max_len: int, devices: list):
        self.k, self.context, self.max_len = k, context, max_len
        self.units = units
        self.n_layers = len(devices)
        self.devices = [torch.device(d) for d in devices]
        self.first = torch.tensor(first_sentence, dtype=torch.int64)
        W = context[0] + 1 + context[1]
        self.offsets = {d: torch.arange(-context[0], context[1] + 1, device=d) for d in set(self.devices)}
        self.cols, self.state = [], []
        for layer, dev in enumerate(self.devices):
            cols = units[units[:, 0] == layer, 1]
            self.cols.append(cols.to(dev))
            U = len(cols)
            self.state.append({
                "value": torch.full((n_langs, U, k), float("-inf"), dtype=torch.float32, device=dev),
                "key": torch.full((n_langs, U, k), EMPTY, dtype=torch.int64, device=dev),
                "token": torch.full((n_langs, U, k), -1, dtype=torch.int32, device=dev),
                "window": torch.zeros((n_langs, U, k, W), dtype=torch.float32, device=dev),
            })
        self._tok: dict = {}

    # -- streaming -------------------------------------------------------------------------

    def start_batch(self, batch: Any) -> None:
        """Each counted token's key and its rank among the batch's keys, moved once to each device."""
        flat = batch.counted.reshape(-1).nonzero().squeeze(1)
        T = batch.counted.shape[1]
        row, pos = flat // T, flat % T
        sentence = batch.sentence_ids[row] - self.first[batch.language]
        key = sentence * self.max_len + pos
        low = torch.empty_like(key)
        low[key.argsort()] = _LOW - torch.arange(len(key))
        token = batch.tokens.reshape(-1)[flat].to(torch.int32)
        self._tok = {d: (key.to(d), low.to(d), row.to(d), pos.to(d), token.to(d), batch.counted.to(d))
                     for d in set(self.devices)}

    def add(self, layer: int, language: int, act: Tensor, x: Tensor) -> None:
        """Fold one batch into layer ``layer``'s state: ``act`` is the site activation ``[B, T, I]``
        (float32), ``x`` its counted tokens ``[N, I]`` in ``batch.counted``'s flattened order."""
        cols = self.cols[layer]
        if len(cols) == 0 or x.shape[0] == 0:
            return
        dev = self.devices[layer]
        key, low, row, pos, token, counted = self._tok[dev]
        xs = x[:, cols].T  # [U, N]
        kk = min(self.k, xs.shape[1])
        idx = _top(xs, low, kk)  # [U, kk]
        B, T = counted.shape
        p = pos[idx][..., None] + self.offsets[dev]  # [U, kk, W]
        r = row[idx][..., None].expand_as(p)
        inside = (p >= 0) & (p < T)
        pc = p.clamp(0, T - 1)
        win = act[r, pc, cols[:, None, None].expand_as(p)]
        new = {"value": xs.gather(1, idx), "key": key[idx], "token": token[idx],
               "window": torch.where(inside & counted[r, pc], win, torch.zeros((), device=dev))}
        mine = {name: t[language] for name, t in self.state[layer].items()}
        merged = merge_entries(mine, new, self.k)
        for name, t in self.state[layer].items():
            t[language] = merged[name]

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """``value``/``key``/``token`` ``[lang, unit, k]`` and ``window`` ``[lang, unit, k, W]`` on the
        host, units in :attr:`units` order (layer by layer)."""
        return {name: torch.cat([s[name].to("cpu") for s in self.state], 1).contiguous() for name in self.state[0]}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        start = 0
        for s in self.state:
            U = s["value"].shape[1]
            for name, t in s.items():
                if name not in state or state[name].shape[0] != t.shape[0] or state[name].shape[2:] != t.shape[2:] \
                        or state[name].shape[1] != self.units.shape[0]:
                    raise LangNeuronsError(f"the checkpoint's top examples ({name!r}) do not fit this recording")
                t.copy_(state[name][:, start:start + U])
            start += U

    def merge_state(self, other: dict[str, Tensor]) -> None:
        """Fold another process's :meth:`state_dict` (same units, other text) into this one."""
        mine = self.state_dict()
        merged = merge_entries(mine, other, self.k)
        self.load_state_dict(merged)


# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class TopExamples:
    """Per unit and language, the *k* highest activations and where they occurred.

    ``units[u] = (layer, index)``. For language ``l``, unit ``u`` and rank ``r`` (0 = highest):
    ``value[l, u, r]`` is the activation, ``sentence[l, u, r]`` the sentence's index within its
    language (``-1``: fewer than *k* tokens were seen), ``position[l, u, r]`` the token's position
    in the sequence the model saw (BOS, when the tokenizer has one, is position 0 and never an
    example), ``token[l, u, r]`` its id, and ``window[l, u, r, w]`` the unit's activation at position
    ``position - before + w`` (0 where that is outside the sentence or BOS).

    ``texts`` holds every sentence that has an example: ``{language: {sentence index: {"text",
    "tokens", "pieces"}}}``, the token ids the model saw and each one's text (``pieces`` join to the
    decoded sentence; a piece is empty where a character spans several tokens and shows on the
    last of them).
    """

    languages: list[str]
    site: str
    units: Int64[Tensor, "unit 2"]
    value: Float32[Tensor, "lang unit k"]
    sentence: Int64[Tensor, "lang unit k"]
    position: Int64[Tensor, "lang unit k"]
    token: Int32[Tensor, "lang unit k"]
    window: Float32[Tensor, "lang unit k ctx"]
    context: tuple[int, int]
    texts: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        K, U = len(self.languages), self.units.shape[0]
        for name in ("value", "sentence", "position", "token"):
            t = getattr(self, name)
            if t.shape != self.value.shape or t.shape[:2] != (K, U):
                raise LangNeuronsError(f"top examples: {name} has shape {tuple(t.shape)}, expected ({K}, {U}, k)")
        if self.window.shape[:3] != self.value.shape or self.window.shape[3] != sum(self.context) + 1:
            raise LangNeuronsError(f"top examples: window has shape {tuple(self.window.shape)}, expected "
                                   f"{tuple(self.value.shape) + (sum(self.context) + 1,)}")
        object.__setattr__(self, "context", tuple(int(c) for c in self.context))

    @property
    def k(self) -> int:
        return self.value.shape[2]

    def unit(self, layer: int, index: int) -> int:
        """The row of unit ``(layer, index)`` in :attr:`units`."""
        hit = ((self.units[:, 0] == layer) & (self.units[:, 1] == index)).nonzero()
        if len(hit) == 0:
            raise LangNeuronsError(f"unit ({layer}, {index}) has no top examples here; recorded units: "
                                   f"{self.units.shape[0]} (record with top_units= including it)")
        return int(hit[0, 0])

    def examples(self, layer: int, index: int, language: str) -> list[dict]:
        """Unit ``(layer, index)``'s examples in ``language``, highest first: ``value``, ``sentence``,
        ``position``, ``token``, ``window`` (list), and the sentence's ``text``, ``tokens``, ``pieces``."""
        if language not in self.languages:
            raise LangNeuronsError(f"language {language!r} has no top examples; available: {choices(self.languages)}")
        li, u = self.languages.index(language), self.unit(layer, index)
        out = []
        for r in range(self.k):
            s = int(self.sentence[li, u, r])
            if s < 0:
                break
            out.append({"value": float(self.value[li, u, r]), "sentence": s, "position": int(self.position[li, u, r]),
                        "token": int(self.token[li, u, r]), "window": self.window[li, u, r].tolist(),
                        **self.texts[language][s]})
        return out

    def frame(self):
        """One row per example: ``language, layer, index, rank, value, sentence, position, token, piece``."""
        import pandas as pd

        rows = []
        for li, lang in enumerate(self.languages):
            for u, (layer, index) in enumerate(self.units.tolist()):
                for r in range(self.k):
                    s = int(self.sentence[li, u, r])
                    if s < 0:
                        break
                    pos = int(self.position[li, u, r])
                    rows.append((lang, layer, index, r, float(self.value[li, u, r]), s, pos,
                                 int(self.token[li, u, r]), self.texts[lang][s]["pieces"][pos]))
        return pd.DataFrame(rows, columns=["language", "layer", "index", "rank", "value", "sentence", "position",
                                           "token", "piece"])

    # -- combining -------------------------------------------------------------------------

    def select(self, languages: list[str]) -> "TopExamples":
        idx = [self.languages.index(k) for k in languages]
        return TopExamples(list(languages), self.site, self.units, self.value[idx], self.sentence[idx],
                           self.position[idx], self.token[idx], self.window[idx], self.context,
                           {k: self.texts[k] for k in languages}, dict(self.meta))

    def merge(self, other: "TopExamples") -> "TopExamples":
        """The examples of both, for recordings of *different* languages (a sentence index means a
        sentence of one recording's corpus: the same language from two recordings cannot be ranked
        together)."""
        shared = [k for k in self.languages if k in other.languages]
        if shared:
            raise LangNeuronsError(f"cannot merge top examples: both hold language(s) {choices(shared)}; their "
                                   "sentence indices refer to different corpora. Merge recordings of disjoint "
                                   "languages, or record the language once")
        if not torch.equal(self.units, other.units) or self.context != other.context or self.k != other.k \
                or self.site != other.site:
            raise LangNeuronsError("cannot merge top examples recorded with different units, k, context or site")
        cat = lambda name: torch.cat([getattr(self, name), getattr(other, name)])  # noqa: E731
        meta = dict(self.meta)
        meta["merged_from"] = [self.meta.get("corpus"), other.meta.get("corpus")]
        return TopExamples(self.languages + other.languages, self.site, self.units, cat("value"), cat("sentence"),
                           cat("position"), cat("token"), cat("window"), self.context,
                           {**self.texts, **other.texts}, meta)

    # -- files -----------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).contiguous()
                for name in ("units", "value", "sentence", "position", "token", "window")}

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``top_examples.safetensors`` and ``top_examples.json`` (texts, settings and the
        tensors' checksum) into ``directory``; return the checksum (the statistics record it)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (TOP_TENSORS + ".tmp")
        save_file(self.tensors(), str(tmp))
        digest = sha256(tmp)
        meta = {"format": TOP_FORMAT, "languages": self.languages, "site": self.site, "k": self.k,
                "context": list(self.context), **{k: v for k, v in self.meta.items() if k not in ("texts",)},
                "package_version": self.meta.get("package_version", package_version()), "tensors_sha256": digest,
                "texts": {lang: {str(s): v for s, v in sents.items()} for lang, sents in self.texts.items()}}
        atomic_write_text(d / TOP_JSON, json.dumps(meta, ensure_ascii=False))
        os.replace(tmp, d / TOP_TENSORS)
        return digest

    @classmethod
    def load(cls, directory: str | os.PathLike, sha: str | None = None) -> "TopExamples":
        """Read what :meth:`save` wrote; ``sha``: the checksum the statistics recorded for them."""
        d = Path(directory)
        jp, tp = d / TOP_JSON, d / TOP_TENSORS
        if not jp.is_file() or not tp.is_file():
            raise LangNeuronsError(f"no top examples in {str(d)!r}: expected {TOP_JSON} and {TOP_TENSORS}")
        try:
            meta = json.loads(jp.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LangNeuronsError(f"{str(jp)!r} is not valid JSON: {e}") from None
        if meta.get("format") != TOP_FORMAT:
            raise LangNeuronsError(f"{str(jp)!r}: unsupported format {meta.get('format')!r}; expected {TOP_FORMAT!r}")
        actual = sha256(tp)
        if meta.get("tensors_sha256") != actual or (sha is not None and sha != actual):
            raise LangNeuronsError(f"{str(tp)!r} is not the file its statistics and {TOP_JSON} were written with "
                                   "(interrupted write, or files from two recordings)")
        t = load_file(str(tp))
        texts = {lang: {int(s): v for s, v in sents.items()} for lang, sents in meta.pop("texts").items()}
        langs, site, context = meta.pop("languages"), meta.pop("site"), tuple(meta.pop("context"))
        for k in ("format", "k", "tensors_sha256"):
            meta.pop(k, None)
        out = cls(langs, site, t["units"], t["value"], t["sentence"], t["position"], t["token"], t["window"],
                  context, texts, meta)
        missing = [(lang, s) for li, lang in enumerate(langs) for s in out.sentence[li].unique().tolist()
                   if s >= 0 and s not in texts.get(lang, {})]
        if missing:
            raise LangNeuronsError(f"{str(jp)!r} lacks the text of sentence(s) {missing[:5]} that hold examples")
        return out


# ---------------------------------------------------------------------------------------------
# From a finished recording to the result


def token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text: ``"".join(pieces)`` is the decoded sequence. A
    character split over several tokens (byte fallback) shows on the token that completes it."""
    pieces, done = [], ""
    for i in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stable = text.rstrip("\ufffd") if i < len(ids) else text
        if not stable.startswith(done):  # a tokenizer that rewrites earlier text: give this token what is new
            common = os.path.commonprefix([done, stable])
            pieces.append(stable[len(common):])
            done = stable
            continue
        pieces.append(stable[len(done):])
        done = stable
    return pieces


def finish(state: dict[str, Tensor], acc: TopKAccumulator, languages: list[str], site: str,
           sentences: dict[str, list[str]], tokenizer: Any, encode, meta: dict) -> TopExamples:
    """The result of a recording: keys split into sentence and position, and the text of every
    sentence holding an example re-tokenized with ``encode(text) → ids`` (the recorder's own)."""
    key = state["key"]
    empty = key == EMPTY
    sentence = torch.where(empty, -1, key // acc.max_len)
    position = torch.where(empty, -1, key % acc.max_len)
    texts: dict = {}
    for li, lang in enumerate(languages):
        texts[lang] = {}
        for s in sentence[li].unique().tolist():
            if s < 0:
                continue
            ids = encode(sentences[lang][s])
            texts[lang][s] = {"text": sentences[lang][s], "tokens": ids, "pieces": token_pieces(tokenizer, ids)}
        # the token the model saw at each example must be the one re-tokenizing gives
        if texts[lang]:
            width = max(len(v["tokens"]) for v in texts[lang].values())
            table = torch.full((max(texts[lang]) + 1, width), -2, dtype=torch.int64)
            for s, v in texts[lang].items():
                table[s, :len(v["tokens"])] = torch.tensor(v["tokens"], dtype=torch.int64)
            held = sentence[li] >= 0
            seen = table[sentence[li][held], position[li][held].clamp(max=width - 1)]
            seen = torch.where(position[li][held] < width, seen, -2)
            if not torch.equal(seen, state["token"][li][held].to(torch.int64)):
                raise LangNeuronsError(f"re-tokenizing the sentences of {lang!r} does not give the tokens the model "
                                       "saw; was the corpus changed during the recording?")
    return TopExamples(list(languages), site, acc.units.clone(), state["value"], sentence, position, state["token"],
                       state["window"], acc.context, texts, {**meta, "k": acc.k, "max_len": acc.max_len})
