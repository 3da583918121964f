"""Per-language neuron statistics: the result of recording, saved as safetensors + JSON.

Every field is a sum over tokens (or a list of per-sentence values), so statistics recorded on
disjoint text — other processes, other GPUs, an interrupted run — merge exactly by addition.
"""

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Float, Float64, Int64
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import _checks
from ._io import atomic_write_text, package_version, read_json, safe_name, sha256
from .examples import TopExamples
from .identity import compatible
from .models import SITES
from .errors import LangNeuronsError, choices

STATS_TENSORS = "stats.safetensors"
STATS_JSON = "stats.json"
FORMAT_VERSION = 1
SENTENCE_STATS = ("mean", "median", "max", "min")
_IMPORTANCE = ("importance_sum", "importance_docs", "n_documents")  # PLND (record(..., plnd=True))


@dataclass(frozen=True)
class NeuronStats:
    """Streaming statistics of every MLP neuron, per language.

    ``count_pos[k, l, j]`` counts tokens of language ``k`` on which neuron ``(l, j)`` was > 0;
    ``sum`` and ``sum_sq`` add its activation and squared activation; ``n_tokens[k]`` counts the
    tokens (BOS and padding never count). All float64.

    Optional:
      * ``sentence_means`` ``[n_sentences, layer, d_mlp]`` (float32): each sentence's mean
        activation, with ``sentence_language[s]`` the index of its language in ``languages``;
      * ``hist`` ``[lang, layer, d_mlp, len(hist_edges) + 1]``: counts per bin, bin ``b`` holding
        values in ``[edges[b-1], edges[b])`` (bin 0 is everything below ``edges[0]``, the last bin
        everything from ``edges[-1]`` up);
      * PLND importance (``record(..., plnd=True)``, :mod:`.importance`): ``importance_sum``
        (Σ over tokens of ``|post_j|·‖W_down[:, j]‖``), ``importance_docs`` (documents in which the
        neuron is among its layer's top ``meta["options"]["plnd_top_rate"]``) and ``n_documents``;
      * ``top_examples``: each unit's top-activating tokens per language (:class:`~.examples.TopExamples`,
        ``record(..., top_examples=K)``), saved beside the statistics.
    """

    languages: list[str]
    site: str
    n_tokens: Float64[Tensor, " lang"]
    count_pos: Float64[Tensor, "lang layer d_mlp"]
    sum: Float64[Tensor, "lang layer d_mlp"]
    sum_sq: Float64[Tensor, "lang layer d_mlp"]
    sentence_means: Float[Tensor, "sentence layer d_mlp"] | None = None
    sentence_language: Int64[Tensor, " sentence"] | None = None
    hist: Float64[Tensor, "lang layer d_mlp bin"] | None = None
    hist_edges: Float64[Tensor, " edge"] | None = None
    meta: dict = field(default_factory=dict)
    top_examples: TopExamples | None = None
    importance_sum: Float64[Tensor, "lang layer d_mlp"] | None = None
    importance_docs: Float64[Tensor, "lang layer d_mlp"] | None = None
    n_documents: Float64[Tensor, " lang"] | None = None

    def __post_init__(self):
        K = len(self.languages)
        if len(set(self.languages)) != K:
            raise LangNeuronsError(f"duplicate languages in statistics: {self.languages}")
        if self.n_tokens.shape != (K,):
            raise LangNeuronsError(f"n_tokens has shape {tuple(self.n_tokens.shape)}, expected ({K},)")
        for name in ("count_pos", "sum", "sum_sq"):
            t = getattr(self, name)
            if t.ndim != 3 or t.shape[0] != K or t.shape != self.count_pos.shape:
                raise LangNeuronsError(f"{name} has shape {tuple(t.shape)}, expected ({K}, layers, d_mlp)")
        if (self.sentence_means is None) != (self.sentence_language is None):
            raise LangNeuronsError("sentence_means and sentence_language must be given together")
        if (self.hist is None) != (self.hist_edges is None):
            raise LangNeuronsError("hist and hist_edges must be given together")
        plnd = [getattr(self, n) is None for n in _IMPORTANCE]
        if any(plnd) != all(plnd):
            raise LangNeuronsError("importance_sum, importance_docs and n_documents must be given together")
        if not any(plnd):
            for name in _IMPORTANCE[:2]:
                if getattr(self, name).shape != self.count_pos.shape:
                    raise LangNeuronsError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected "
                                           f"{tuple(self.count_pos.shape)}")
            if self.n_documents.shape != (K,):
                raise LangNeuronsError(f"n_documents has shape {tuple(self.n_documents.shape)}, expected ({K},)")
        top = self.top_examples
        if top is not None:
            if top.languages != list(self.languages) or top.site != self.site:
                raise LangNeuronsError(f"top examples of {top.languages} at site {top.site!r} do not belong to "
                                       f"statistics of {self.languages} at site {self.site!r}")
            units = top.units
            if len(units) and (int(units[:, 0].max()) >= self.n_layers or int(units[:, 1].max()) >= self.d_mlp):
                raise LangNeuronsError(f"top examples name units outside these statistics' {self.n_layers} layers "
                                       f"x {self.d_mlp} units")

    # -- shape -----------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return self.count_pos.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.count_pos.shape[2]

    @property
    def model(self) -> dict:
        """The fingerprint of the model these statistics were recorded on (empty if unknown)."""
        return dict(self.meta.get("model") or {})

    def index(self, language: str) -> int:
        if language not in self.languages:
            raise LangNeuronsError(f"language {language!r} is not in these statistics; available: {choices(self.languages)}")
        return self.languages.index(language)

    # -- derived statistics ----------------------------------------------------------------

    def _per_token(self, t: Tensor) -> Tensor:
        if (self.n_tokens <= 0).any():
            empty = [k for k, n in zip(self.languages, self.n_tokens.tolist()) if n <= 0]
            raise LangNeuronsError(f"no tokens recorded for language(s) {empty}")
        return t / self.n_tokens[:, None, None]

    def activation_probability(self) -> Float64[Tensor, "lang layer d_mlp"]:
        """``p[k, l, j]``: the fraction of language k's tokens on which the neuron is > 0."""
        return self._per_token(self.count_pos)

    def mean(self) -> Float64[Tensor, "lang layer d_mlp"]:
        """Mean activation over tokens."""
        return self._per_token(self.sum)

    def var(self) -> Float64[Tensor, "lang layer d_mlp"]:
        """Population variance over tokens."""
        m = self.mean()
        return (self._per_token(self.sum_sq) - m * m).clamp_min(0.0)

    def std(self) -> Float64[Tensor, "lang layer d_mlp"]:
        return self.var().sqrt()

    def sentence_stat(self, stat: str = "median") -> Float64[Tensor, "lang layer d_mlp"]:
        """``mean``/``median``/``max``/``min`` over each language's per-sentence mean activations.

        Kojima et al. force expert units to the median of sentence means; Rahmanisa et al. use the
        max or the median. Needs ``record(..., sentence_means=True)``. The median of an even number
        of values is the lower middle one (``torch.median``).
        """
        if stat not in SENTENCE_STATS:
            raise LangNeuronsError(f"unknown sentence statistic {stat!r}; allowed: {choices(SENTENCE_STATS)}")
        if self.sentence_means is None:
            raise LangNeuronsError("these statistics hold no per-sentence means; record with sentence_means=True")
        out = []
        for k, lang in enumerate(self.languages):
            rows = self.sentence_means[self.sentence_language == k].double()
            if rows.shape[0] == 0:
                raise LangNeuronsError(f"no sentences recorded for language {lang!r}")
            if stat == "mean":
                out.append(rows.mean(0))
            elif stat == "median":
                out.append(rows.median(0).values)
            elif stat == "max":
                out.append(rows.max(0).values)
            else:
                out.append(rows.min(0).values)
        return torch.stack(out)

    def quantile(self, q: float) -> Float64[Tensor, "lang layer d_mlp"]:
        """The q-quantile of each neuron's activations over a language's tokens, read from the histogram.

        Linear interpolation inside the bin that holds the quantile; values in the open-ended
        outer bins are reported as the outermost edge. Needs ``record(..., histogram_edges=...)``.
        """
        if not 0.0 <= q <= 1.0:
            raise LangNeuronsError(f"quantile must be in [0, 1], got {q!r}")
        if self.hist is None:
            raise LangNeuronsError("these statistics hold no histograms; record with histogram_edges=...")
        edges = self.hist_edges.double()
        cum = self.hist.double().cumsum(-1)  # [K, L, I, B]
        total = cum[..., -1:]
        target = q * total
        b = torch.searchsorted(cum.contiguous(), target.contiguous(), right=False).clamp(max=cum.shape[-1] - 1)
        before = torch.where(b > 0, cum.gather(-1, (b - 1).clamp_min(0)), torch.zeros_like(target))
        in_bin = self.hist.double().gather(-1, b)
        frac = torch.where(in_bin > 0, (target - before) / in_bin, torch.zeros_like(target)).clamp(0, 1)
        # bin b spans [edges[b-1], edges[b]); outer bins collapse to the outer edge
        lo = edges[(b - 1).clamp(0, len(edges) - 1)]
        hi = edges[b.clamp(0, len(edges) - 1)]
        lo = torch.where(b == 0, edges[0], lo)
        hi = torch.where(b == len(edges), edges[-1], hi)
        return (lo + frac * (hi - lo))[..., 0]

    def median(self) -> Float64[Tensor, "lang layer d_mlp"]:
        return self.quantile(0.5)

    # -- combining -------------------------------------------------------------------------

    def check_compatible(self, other: "NeuronStats") -> None:
        """Raise if ``other`` comes from another model, site or shape."""
        if other.site != self.site:
            raise LangNeuronsError(f"statistics from different sites: {self.site!r} and {other.site!r}")
        compatible(self.model, other.model, "the first statistics", "the second")
        if self.count_pos.shape[1:] != other.count_pos.shape[1:]:
            raise LangNeuronsError(
                f"statistics of different shapes: {tuple(self.count_pos.shape[1:])} and {tuple(other.count_pos.shape[1:])}"
            )

    def merge(self, other: "NeuronStats") -> "NeuronStats":
        """Statistics of the union of the text of both: sums add; languages are the union.

        Optional fields merge only when both sides have them: a merge that silently dropped one
        side's per-sentence means or histograms would look complete and not be.
        """
        self.check_compatible(other)
        for name, what in (("sentence_means", "per-sentence means (record with sentence_means=True)"),
                           ("hist", "histograms (record with histogram_edges=...)"),
                           ("importance_sum", "PLND importance (record with plnd=True)"),
                           ("top_examples", "top examples (record with top_examples=K)")):
            mine, theirs = getattr(self, name) is not None, getattr(other, name) is not None
            if mine != theirs:
                raise LangNeuronsError(f"cannot merge: only the {'first' if mine else 'second'} statistics hold "
                                       f"{name} {what}; record both alike, or drop the field from both")
        langs = list(self.languages) + [k for k in other.languages if k not in self.languages]
        K, (L, I) = len(langs), self.count_pos.shape[1:]

        def combine(name: str, shape_tail: tuple) -> Tensor:
            out = torch.zeros((K, *shape_tail), dtype=torch.float64)
            for src in (self, other):
                idx = torch.tensor([langs.index(k) for k in src.languages])
                out.index_add_(0, idx, getattr(src, name).double())
            return out

        hist = edges = None
        if self.hist is not None:
            if not torch.equal(self.hist_edges, other.hist_edges):
                raise LangNeuronsError("cannot merge histograms with different bin edges")
            hist, edges = combine("hist", tuple(self.hist.shape[1:])), self.hist_edges
        sm = sl = None
        if self.sentence_means is not None:
            sm = torch.cat([self.sentence_means, other.sentence_means])
            remap = lambda s: torch.tensor([langs.index(k) for k in s.languages])[s.sentence_language]  # noqa: E731
            sl = torch.cat([remap(self), remap(other)])
        n_tokens = torch.zeros(K, dtype=torch.float64)
        for src in (self, other):
            n_tokens.index_add_(0, torch.tensor([langs.index(k) for k in src.languages]), src.n_tokens.double())
        plnd = {}
        if self.importance_sum is not None:
            rates = [(s.meta.get("options") or {}).get("plnd_top_rate") for s in (self, other)]
            if rates[0] != rates[1]:
                raise LangNeuronsError(f"cannot merge PLND importance recorded with different plnd_top_rate: {rates}")
            plnd = {"importance_sum": combine("importance_sum", (L, I)),
                    "importance_docs": combine("importance_docs", (L, I)),
                    "n_documents": combine("n_documents", ())}
        meta = dict(self.meta)
        meta["merged_from"] = [self.meta.get("corpus"), other.meta.get("corpus")]
        top = None
        if self.top_examples is not None:
            top = self.top_examples.merge(other.top_examples)
            if top.languages != langs:  # languages are disjoint here (merge refuses shared ones): same order
                top = top.select(langs)
        return NeuronStats(langs, self.site, n_tokens, combine("count_pos", (L, I)), combine("sum", (L, I)),
                           combine("sum_sq", (L, I)), sm, sl, hist, edges, meta, top, **plnd)

    def select(self, languages: list[str]) -> "NeuronStats":
        """The statistics of a subset of languages, in the given order."""
        idx = torch.tensor([self.index(k) for k in languages])
        sm = sl = None
        if self.sentence_means is not None:
            keep = torch.isin(self.sentence_language, idx)
            sm = self.sentence_means[keep]
            remap = torch.full((len(self.languages),), -1, dtype=torch.int64)
            remap[idx] = torch.arange(len(languages))
            sl = remap[self.sentence_language[keep]]
        plnd = {n: None if getattr(self, n) is None else getattr(self, n)[idx] for n in _IMPORTANCE}
        return replace(self, languages=list(languages), n_tokens=self.n_tokens[idx], count_pos=self.count_pos[idx],
                       sum=self.sum[idx], sum_sq=self.sum_sq[idx], sentence_means=sm, sentence_language=sl,
                       hist=None if self.hist is None else self.hist[idx],
                       top_examples=None if self.top_examples is None else self.top_examples.select(list(languages)),
                       **plnd)

    # -- files -----------------------------------------------------------------------------

    def tensors(self) -> dict[str, Tensor]:
        out = {"n_tokens": self.n_tokens, "count_pos": self.count_pos, "sum": self.sum, "sum_sq": self.sum_sq}
        if self.sentence_means is not None:
            out["sentence_means"] = self.sentence_means
            out["sentence_language"] = self.sentence_language
        if self.hist is not None:
            out["hist"] = self.hist
            out["hist_edges"] = self.hist_edges
        for name in _IMPORTANCE:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {k: v.contiguous() for k, v in out.items()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``stats.safetensors`` and ``stats.json`` into ``directory``, each atomically.

        The JSON records a checksum of the tensor file, so a pair torn by a crash between the two
        renames is detected at load.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp_t = d / (STATS_TENSORS + ".tmp")
        save_file(self.tensors(), str(tmp_t))
        # the top examples first, their checksum recorded in stats.json: a stale pair is never read
        top = None if self.top_examples is None else {"sha256": self.top_examples.save(d)}
        meta = {
            "format_version": FORMAT_VERSION,
            "languages": list(self.languages),
            "site": self.site,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            **{k: v for k, v in self.meta.items() if k not in ("languages", "site", "n_layers", "d_mlp")},
            "package_version": self.meta.get("package_version", package_version()),
            "tensors_sha256": sha256(tmp_t),
            "top_examples": top,
        }
        atomic_write_text(d / STATS_JSON, json.dumps(meta, indent=1, ensure_ascii=False))
        os.replace(tmp_t, d / STATS_TENSORS)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "NeuronStats":
        """Read statistics written by :meth:`save`, checked whole: every field of ``stats.json``
        (type and allowed values), the tensor file's checksum (required), the set of tensors (none
        missing, none extra), their dtypes and shapes. Anything else is one
        :class:`LangNeuronsError` naming the file and what is wrong."""
        d = Path(directory)
        jp, tp = d / STATS_JSON, d / STATS_TENSORS
        if not jp.is_file() or not tp.is_file():
            raise LangNeuronsError(f"no statistics in {str(d)!r}: expected {STATS_JSON} and {STATS_TENSORS}")
        meta = read_json(jp, "statistics")
        bad = lambda what: LangNeuronsError(f"{str(jp)!r}: {what}")  # noqa: E731
        if not isinstance(meta, dict):
            raise bad(f"expected a JSON object, got {type(meta).__name__}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise bad(f"unsupported format_version {meta.get('format_version')!r} (expected {FORMAT_VERSION})")
        langs = meta.get("languages")
        if not isinstance(langs, list) or not langs or not all(isinstance(k, str) for k in langs):
            raise bad(f"'languages' must be a non-empty list of language codes, got {langs!r}")
        if len(set(langs)) != len(langs):
            raise bad(f"'languages' holds duplicates: {langs!r}")
        try:
            for k in langs:
                safe_name("language", k)
        except LangNeuronsError as e:
            raise bad(str(e)) from None
        if meta.get("site") not in SITES:
            raise bad(f"'site' must be one of {choices(SITES)}, got {meta.get('site')!r}")
        for k in ("n_layers", "d_mlp"):
            if not _checks.is_int(meta.get(k)) or meta[k] < 1:
                raise bad(f"{k!r} must be a positive integer, got {meta.get(k)!r}")
        for k in ("model", "options", "n_sentences"):
            if k in meta and meta[k] is not None and not isinstance(meta[k], dict):
                raise bad(f"{k!r} must be an object, got {meta[k]!r}")
        digest = meta.get("tensors_sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise bad(f"'tensors_sha256' (the checksum of {STATS_TENSORS}) is missing or malformed: {digest!r}")
        if digest != sha256(tp):
            raise LangNeuronsError(f"{str(tp)!r} does not match the checksum in {STATS_JSON}: the two files are "
                                   "from different runs, or a write was interrupted or damaged")
        try:
            t = load_file(str(tp))
        except Exception as e:  # safetensors' own errors on a damaged header
            raise LangNeuronsError(f"{str(tp)!r} is not a readable safetensors file ({e})") from None
        _check_tensors(t, len(langs), meta["n_layers"], meta["d_mlp"], str(tp))
        top_ref = meta.get("top_examples")
        if top_ref is not None and not (isinstance(top_ref, dict) and isinstance(top_ref.get("sha256"), str)):
            raise bad(f"'top_examples' must be null or an object with the examples' 'sha256', got {top_ref!r}")
        site = meta["site"]
        meta = {k: v for k, v in meta.items() if k not in ("languages", "site", "format_version", "n_layers", "d_mlp",
                                                           "tensors_sha256", "top_examples")}
        top = None if not top_ref else TopExamples.load(d, sha=top_ref["sha256"])
        return cls(langs, site, t["n_tokens"], t["count_pos"], t["sum"], t["sum_sq"], t.get("sentence_means"),
                   t.get("sentence_language"), t.get("hist"), t.get("hist_edges"), meta, top,
                   **{n: t.get(n) for n in _IMPORTANCE})


# name → dtype; the optional ones come in pairs (both or neither)
_REQUIRED = {"n_tokens": torch.float64, "count_pos": torch.float64, "sum": torch.float64, "sum_sq": torch.float64}
_PAIRS = ({"sentence_means": torch.float32, "sentence_language": torch.int64},
          {"hist": torch.float64, "hist_edges": torch.float64},
          {"importance_sum": torch.float64, "importance_docs": torch.float64, "n_documents": torch.float64})


def _check_tensors(t: dict, K: int, L: int, I: int, where: str) -> None:
    allowed = {**_REQUIRED, **_PAIRS[0], **_PAIRS[1], **_PAIRS[2]}
    missing = [k for k in _REQUIRED if k not in t]
    extra = [k for k in t if k not in allowed]
    if missing or extra:
        raise LangNeuronsError(f"{where!r}: " + "; ".join(
            ([f"missing tensor(s) {choices(missing)}"] if missing else [])
            + ([f"unexpected tensor(s) {choices(extra)}"] if extra else [])))
    for pair in _PAIRS:
        have = [k for k in pair if k in t]
        if have and len(have) != len(pair):
            raise LangNeuronsError(f"{where!r}: {choices(have)} without {choices([k for k in pair if k not in t])}")
    for k, v in t.items():
        if v.dtype != allowed[k]:
            raise LangNeuronsError(f"{where!r}: tensor {k!r} has dtype {v.dtype}, expected {allowed[k]}")
    shapes = {"n_tokens": (K,), "count_pos": (K, L, I), "sum": (K, L, I), "sum_sq": (K, L, I)}
    if "sentence_means" in t:
        S = t["sentence_language"].shape[0] if t["sentence_language"].ndim == 1 else -1
        shapes.update(sentence_means=(S, L, I), sentence_language=(S,))
    if "hist" in t:
        E = t["hist_edges"].shape[0] if t["hist_edges"].ndim == 1 else -1
        shapes.update(hist=(K, L, I, E + 1), hist_edges=(E,))
    if "importance_sum" in t:
        shapes.update(importance_sum=(K, L, I), importance_docs=(K, L, I), n_documents=(K,))
    for k, shape in shapes.items():
        if tuple(t[k].shape) != shape:
            raise LangNeuronsError(f"{where!r}: tensor {k!r} has shape {tuple(t[k].shape)}, expected {shape}")
    if "sentence_language" in t and t["sentence_language"].numel() and not (
            0 <= int(t["sentence_language"].min()) and int(t["sentence_language"].max()) < K):
        raise LangNeuronsError(f"{where!r}: 'sentence_language' holds an index outside [0, {K})")
