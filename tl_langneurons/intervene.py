"""Interventions on neurons (and on the residual stream), as hooks inside one context manager.

    with intervene(model, neurons["de"], "set", stats=stats, statistic="mean", factor=16):
        model.generate("The weather today", max_new_tokens=20, do_sample=False)

    # Gurgurov's language arithmetic: switch the source language off, add the target's mean
    with intervene(model, [Intervention(neurons["fr"], "set", value=0.0),
                           Intervention(neurons["de"], "add", factor=1.0, stats=stats)]):
        ...

Modes (METHODS §5), with ``a`` the neuron's activation at its site:

=========  =====================================================================================
``zero``   ``a := 0`` (Tang: deactivation)
``set``    ``a := factor · v``, ``v`` a constant (``value=``) or a statistic of a language
           (``stats=``, ``statistic=``): Kojima, Rahmanisa, Gurgurov "replacement"
``scale``  ``a := factor · a`` (Rahmanisa: amplification)
``add``    ``a := a + factor · v`` (Gurgurov: language arithmetic, ``v`` = the target's mean)
``patch``  ``a := a'``, ``a'`` from a cached run on another input (:func:`cache_site_activations`)
=========  =====================================================================================

Statistics (``statistic=``): ``mean`` (over tokens), ``median`` / ``max`` / ``min`` (of the
language's per-sentence means), ``q0.9`` (any quantile over tokens, read from the histogram).

Sites: values are written where they were measured. ``pre`` is written on ``mlp.hook_pre``;
``post``, and ``act`` of a non-gated MLP, on ``mlp.hook_post``. ``act`` of a gated MLP is
``φ(gate)``, which has no hook of its own: ``zero``/``scale`` of it equal ``zero``/``scale`` of
``hook_post = φ(gate) ⊙ up``, and ``set``/``add``/``patch`` to ``v`` mean ``post := v · up``, with
``up`` read from ``mlp.hook_pre_linear`` in the same forward pass (METHODS §1).

Positions (``positions=``), in absolute positions of the sequence being processed:

* ``"all"`` (default) — every position of every forward call;
* ``"prompt"`` — positions ``< prompt_length``; ``"generated"`` — positions ``≥ prompt_length``;
* ``"last"`` — the last position of each forward call: on a plain forward, position ``T−1`` of
  every row (with right padding that is a pad token for the shorter rows: left-pad, or name the
  positions); during KV-cached generation, the last prompt token and then each generated token as
  it is produced (it stays intervened in the cache). Without a KV cache every step recomputes the
  whole sequence and only its newest token is intervened, so the two differ: to get the cached
  meaning without a cache, name the positions ``P−1 … P+n−1`` (as :mod:`.evaluate` does). Beware
  that with transformers 5.24, TransformerLens 4.3's ``TransformerBridge.generate(use_past_kv_cache=True)``
  (its default) gives wrong tokens on Llama models, with or without an intervention (the package
  requires transformers < 5.24 for this reason); :mod:`.evaluate` generates with
  ``use_past_kv_cache=False`` whatever the version, and a test compares its text with Hugging Face's;
* a list of absolute positions (ints ≥ 0).

How absolute positions are tracked: the first forward call inside the context (or after
``handle.reset()``) starts a sequence at position 0, and its length is the prompt length unless
``prompt_length=`` is given. A later call of exactly one position continues that sequence (a
KV-cached generation step). Any other later call starts again at position 0 (a generation step
without KV cache re-reads the whole sequence; a new forward on other tokens keeps the prompt
length). To run several generations with ``"prompt"``/``"generated"`` in one context, call
``handle.reset()`` between them, or use one context per generation.
"""

import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from tqdm.auto import tqdm

from .corpus import Corpus
from .errors import LangNeuronsError, choices
from .models import SITES, is_gated, model_name, resolve_site, weights_hash
from .neurons import LanguageNeurons
from .stats import SENTENCE_STATS, NeuronStats

MODES = ("zero", "set", "scale", "add", "patch")
POSITIONS = ("all", "prompt", "generated", "last")
STATISTICS = ("mean", *SENTENCE_STATS[1:], "q<quantile>")  # mean over tokens; median/max/min of sentence means


# ---------------------------------------------------------------------------------------------
# Argument checks


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(name: str, v, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise LangNeuronsError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _positions(v) -> str | tuple[int, ...]:
    if isinstance(v, str):
        if v not in POSITIONS:
            raise LangNeuronsError(f"unknown positions {v!r}; allowed: {choices(POSITIONS)} or a list of positions")
        return v
    if isinstance(v, Tensor):
        v = v.reshape(-1).tolist() if v.ndim <= 1 and not v.is_floating_point() else v
    if isinstance(v, (list, tuple, range)) and all(_is_int(p) and p >= 0 for p in v):
        return tuple(sorted({int(p) for p in v}))
    raise LangNeuronsError(f"positions must be one of {choices(POSITIONS)} or a list of positions ≥ 0, got {v!r}")


def _statistic(v) -> str:
    if isinstance(v, str):
        if v == "mean" or v in SENTENCE_STATS[1:]:
            return v
        if v.startswith("q"):
            try:
                q = float(v[1:])
            except ValueError:
                q = math.nan
            if 0.0 <= q <= 1.0:
                return v
    raise LangNeuronsError(f"unknown statistic {v!r}; allowed: {choices(STATISTICS)} (e.g. 'q0.9')")


def _layers_of_dict(d: dict) -> dict[int, tuple[int, ...]]:
    out = {}
    for layer, indices in d.items():
        if not _is_int(layer) or layer < 0:
            raise LangNeuronsError(f"neuron layers must be integers ≥ 0, got {layer!r}")
        if isinstance(indices, Tensor):
            indices = indices.reshape(-1).tolist()
        if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
            raise LangNeuronsError(f"layer {layer}: indices must be a list of integers, got {indices!r}")
        indices = list(indices)
        if not all(_is_int(i) and i >= 0 for i in indices):
            raise LangNeuronsError(f"layer {layer}: indices must be integers ≥ 0, got {indices!r}")
        if indices:
            out[int(layer)] = tuple(sorted({int(i) for i in indices}))
    return dict(sorted(out.items()))


def _stats_values(stats: NeuronStats, language: str, statistic: str) -> Float[Tensor, "layer d_mlp"]:
    one = stats.select([language])  # only this language's sentences / histogram are touched
    if statistic == "mean":
        return one.mean()[0]
    if statistic in SENTENCE_STATS:
        return one.sentence_stat(statistic)[0]
    return one.quantile(float(statistic[1:]))[0]


# ---------------------------------------------------------------------------------------------
# Cached activations for patching


@dataclass(frozen=True, eq=False)
class SiteCache:
    """Activations at one neuron site from one run: ``values[layer]`` is ``[batch, pos, d_mlp]``.

    Made by :func:`cache_site_activations`; the source of ``mode="patch"``.
    """

    site: str
    values: dict[int, Float[Tensor, "batch pos d_mlp"]]
    tokens: Int64[Tensor, "batch pos"]
    model: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SiteCache(site={self.site!r}, layers={sorted(self.values)}, tokens={tuple(self.tokens.shape)})"


class _Stop(Exception):
    """Raised after the last hook a run needs: the rest of the forward pass is not computed."""


def _to_tokens(model: Any, tokens) -> Tensor:
    if isinstance(tokens, (str, list)) and (isinstance(tokens, str) or all(isinstance(t, str) for t in tokens)):
        return model.to_tokens(tokens)
    if isinstance(tokens, Tensor) and not tokens.is_floating_point() and tokens.ndim in (1, 2):
        return (tokens[None] if tokens.ndim == 1 else tokens).to(model.cfg.device)
    raise LangNeuronsError("tokens must be a string, a list of strings or a [batch, pos] integer tensor, "
                           f"got {type(tokens).__name__}")


def cache_site_activations(model: Any, tokens, neurons=None, *, site: str | None = None,
                           attention_mask: Tensor | None = None) -> SiteCache:
    """Run ``tokens`` through ``model`` and keep the activations at a neuron site, for patching.

    Args:
        tokens: ``[batch, pos]`` token ids, or text (tokenized by ``model.to_tokens``, BOS prepended).
        neurons: what will be patched — a :class:`LanguageNeurons`, a ``{layer: [indices]}`` dict
            or an :class:`Intervention`; its site is used and only its layers are kept. ``None``
            keeps every layer.
        site: the site when ``neurons`` does not name one (dict or ``None``); default ``act``.

    Hooks already on the model (an enclosing :func:`intervene`, say) act during this run too.
    """
    if isinstance(neurons, Intervention):
        site_name, layers = neurons.site, sorted(neurons.layers)
    elif isinstance(neurons, LanguageNeurons):
        if site is not None and site != neurons.site:
            raise LangNeuronsError(f"site {site!r} differs from the neuron set's site {neurons.site!r}")
        site_name, layers = neurons.site, sorted({l for l, _ in neurons.union()})
    elif isinstance(neurons, dict):
        site_name, layers = site or "act", sorted(_layers_of_dict(neurons))
    elif neurons is None:
        site_name, layers = site or "act", None
    else:
        raise LangNeuronsError("neurons must be a LanguageNeurons, a {layer: [indices]} dict or None, "
                               f"got {type(neurons).__name__}")
    resolved = resolve_site(model, site_name)
    layers = list(range(resolved.n_layers)) if layers is None else layers
    bad = [l for l in layers if l >= resolved.n_layers]
    if bad:
        raise LangNeuronsError(f"layer {bad[0]} out of range [0, {resolved.n_layers})")
    toks = _to_tokens(model, tokens)
    values: dict[int, Tensor] = {}

    def make(layer: int, last: bool):
        def hook(act: Tensor, hook: Any = None) -> None:
            values[layer] = resolved.read(act).detach().clone()
            if last:
                raise _Stop
        return hook

    hooks = [(resolved.hook_names[l], make(l, i == len(layers) - 1)) for i, l in enumerate(layers)]
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.to(toks.device)}
    if hooks:
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            try:
                model(toks, return_type=None, **kwargs)
            except _Stop:
                pass
    fp = {"name": model_name(model), "weights_hash": weights_hash(model)}
    return SiteCache(site_name, values, toks.detach().cpu().long(), fp)


# ---------------------------------------------------------------------------------------------
# What to do


@dataclass(frozen=True, eq=False)
class Intervention:
    """One intervention on one set of neurons; validates itself on construction.

    Args:
        neurons: a :class:`LanguageNeurons` (one language, or the one named by ``language``) or a
            plain ``{layer: [indices]}`` dict (then ``site`` says where they are; default ``act``).
        mode: one of ``zero``, ``set``, ``scale``, ``add``, ``patch``.
        value: the constant ``v`` of ``set``/``add``.
        factor: ``α``: ``scale`` multiplies by it (required); ``set``/``add`` multiply ``v`` by it
            (default 1).
        stats: :class:`NeuronStats` at the same site, whose ``statistic`` of ``language`` is ``v``
            for ``set``/``add`` (instead of ``value``).
        statistic: ``mean`` (default), ``median``/``max``/``min`` of sentence means, or ``q0.9``.
        language: which language of a multi-language set, and whose statistics; defaults to the
            set's only language (or the statistics' only language).
        site: the site of a dict of neurons (a :class:`LanguageNeurons` carries its own).
        source: for ``patch``, a :class:`SiteCache` at the same site.
        positions: where to intervene (see the module docstring); ``None`` = as the context says.
    """

    neurons: Any
    mode: str
    value: Any = None
    factor: Any = None
    stats: Any = None
    statistic: str = "mean"
    language: str | None = None
    site: str | None = None
    source: Any = None
    positions: Any = None
    layers: dict = field(init=False, repr=False)  # {layer: (indices, ...)}, sorted
    amounts: dict = field(init=False, repr=False)  # set/add: {layer: factor · v per index}, float64

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen; normalised once)
        if self.mode not in MODES:
            raise LangNeuronsError(f"unknown mode {self.mode!r}; allowed: {choices(MODES)}")
        # -- neurons, site, language
        lang = self.language
        if isinstance(self.neurons, LanguageNeurons):
            if self.site is not None and self.site != self.neurons.site:
                raise LangNeuronsError(f"site {self.site!r} differs from the neuron set's site {self.neurons.site!r}")
            if lang is None:
                if len(self.neurons) != 1:
                    raise LangNeuronsError(f"this neuron set holds {len(self.neurons)} languages; name one with "
                                           f"language=, available: {choices(self.neurons.languages)}")
                lang = self.neurons.languages[0]
            put("layers", {l: tuple(ix) for l, ix in sorted(self.neurons.by_layer(lang).items())})
            put("site", self.neurons.site)
        elif isinstance(self.neurons, dict):
            put("layers", _layers_of_dict(self.neurons))
            put("site", "act" if self.site is None else self.site)
        else:
            raise LangNeuronsError("neurons must be a LanguageNeurons or a {layer: [indices]} dict, "
                                   f"got {type(self.neurons).__name__}")
        if self.site not in SITES:
            raise LangNeuronsError(f"unknown site {self.site!r}; allowed: {choices(SITES)}")
        if self.positions is not None:
            put("positions", _positions(self.positions))
        put("statistic", _statistic(self.statistic))
        # -- which arguments each mode takes
        m, given = self.mode, {k for k in ("value", "factor", "stats", "source") if getattr(self, k) is not None}
        takes = {"zero": set(), "scale": {"factor"}, "set": {"value", "factor", "stats"},
                 "add": {"value", "factor", "stats"}, "patch": {"source"}}[m]
        extra = sorted(given - takes)
        if extra:
            raise LangNeuronsError(f"mode {m!r} takes no {extra[0]} (got {getattr(self, extra[0])!r}); "
                                   f"it takes: {choices(sorted(takes)) or 'nothing'}")
        if m == "scale" and self.factor is None:
            raise LangNeuronsError("mode 'scale' needs factor=α")
        if m in ("set", "add") and (self.value is None) == (self.stats is None):
            raise LangNeuronsError(f"mode {m!r} needs exactly one of value= (a constant) or stats= (a statistic); "
                                   f"got {'both' if self.value is not None else 'neither'}")
        if self.statistic != "mean" and self.stats is None:
            raise LangNeuronsError(f"statistic={self.statistic!r} needs stats= (the recorded statistics to read it from)")
        if m == "patch" and not isinstance(self.source, SiteCache):
            raise LangNeuronsError("mode 'patch' needs source= a SiteCache (from cache_site_activations), "
                                   f"got {type(self.source).__name__}")
        put("factor", _number("factor", self.factor, allow_none=True))
        put("value", _number("value", self.value, allow_none=True))
        # -- statistics
        amounts = {}
        if self.stats is not None:
            if not isinstance(self.stats, NeuronStats):
                raise LangNeuronsError(f"stats must be NeuronStats, got {type(self.stats).__name__}")
            if self.stats.site != self.site:
                raise LangNeuronsError(f"statistics were recorded at site {self.stats.site!r} but the neurons are at "
                                       f"site {self.site!r}; values must be written where they were measured")
            if lang is None:
                if len(self.stats.languages) != 1:
                    raise LangNeuronsError(f"name the language whose statistics to use with language=; "
                                           f"available: {choices(self.stats.languages)}")
                lang = self.stats.languages[0]
            self.stats.index(lang)  # raises, naming the languages available
            self._check_range(self.stats.n_layers, self.stats.d_mlp, "the statistics")
            if isinstance(self.neurons, LanguageNeurons):
                a, b = self.neurons.model.get("weights_hash"), self.stats.meta.get("model", {}).get("weights_hash")
                if a and b and a != b:
                    raise LangNeuronsError(f"the neuron set (weights {a!r}) and the statistics (weights {b!r}) "
                                           "come from different models")
            table = _stats_values(self.stats, lang, self.statistic)
            f = 1.0 if self.factor is None else self.factor
            amounts = {l: f * table[l, list(ix)].double() for l, ix in self.layers.items()}
        elif self.value is not None:
            f = 1.0 if self.factor is None else self.factor
            amounts = {l: torch.full((len(ix),), f * self.value, dtype=torch.float64) for l, ix in self.layers.items()}
        if self.source is not None:
            if self.source.site != self.site:
                raise LangNeuronsError(f"the patch source was cached at site {self.source.site!r} but the neurons "
                                       f"are at site {self.site!r}")
            missing = [l for l in self.layers if l not in self.source.values]
            if missing:
                raise LangNeuronsError(f"the patch source holds no activations of layer {missing[0]}; "
                                       f"cached: {sorted(self.source.values)}")
            if self.layers:
                self._check_range(None, self.source.values[next(iter(self.layers))].shape[-1], "the patch source")
        put("language", lang)
        put("amounts", amounts)

    def _check_range(self, n_layers: int | None, d_mlp: int, what: str) -> None:
        for l, ix in self.layers.items():
            if n_layers is not None and l >= n_layers:
                raise LangNeuronsError(f"neuron layer {l} out of range for {what} ({n_layers} layers)")
            if ix[-1] >= d_mlp:
                raise LangNeuronsError(f"neuron index {ix[-1]} of layer {l} out of range for {what} (d_mlp={d_mlp})")

    def models(self) -> list[tuple[str, dict]]:
        """The model fingerprints of the artifacts this intervention uses, named."""
        out = []
        if isinstance(self.neurons, LanguageNeurons):
            out.append(("the neuron set", self.neurons.model))
        if self.stats is not None:
            out.append(("the statistics", self.stats.meta.get("model", {})))
        if self.source is not None:
            out.append(("the patch source", self.source.model))
        return out

    def __repr__(self) -> str:
        n = sum(len(ix) for ix in self.layers.values())
        parts = [f"mode={self.mode!r}", f"site={self.site!r}", f"language={self.language!r}",
                 f"neurons={n} in {len(self.layers)} layers"]
        parts += [f"{k}={getattr(self, k)!r}" for k in ("value", "factor", "positions") if getattr(self, k) is not None]
        if self.stats is not None:
            parts.append(f"statistic={self.statistic!r}")
        return "Intervention(" + ", ".join(parts) + ")"


@dataclass(frozen=True, eq=False)
class DiffMean:
    """Residual-stream difference-of-means steering: add ``beta · direction`` to
    ``blocks.{layer}.hook_resid_post`` (made by :func:`diffmean`; pass it to :func:`intervene`).

    ``direction`` is the mean residual over the target language's tokens minus the mean over the
    other languages' tokens (BOS and padding excluded), unnormalised: ``beta = 1`` moves the
    average other-language token onto the target's mean.
    """

    direction: Float[Tensor, " d_model"]
    layer: int
    beta: float
    target: str
    others: tuple[str, ...]
    n_tokens: dict
    model: dict = field(default_factory=dict)
    positions: Any = None

    def __post_init__(self):
        object.__setattr__(self, "beta", _number("beta", self.beta))
        if self.positions is not None:
            object.__setattr__(self, "positions", _positions(self.positions))

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    def with_beta(self, beta) -> "DiffMean":
        """The same direction with another strength (no need to re-read the corpus)."""
        return replace(self, beta=_number("beta", beta))

    def models(self) -> list[tuple[str, dict]]:
        return [("the diffmean direction", self.model)]

    def __repr__(self) -> str:
        return (f"DiffMean(target={self.target!r}, layer={self.layer}, beta={self.beta}, "
                f"|direction|={float(self.direction.norm()):.4g}, others={list(self.others)})")


def diffmean(model: Any, corpus: Corpus | dict, target: str, layer, beta=1.0, *,
             languages: list[str] | None = None, balanced: bool = False, batch_size: int = 16,
             max_sentences: int | None = None, positions=None, progress: bool = True) -> DiffMean:
    """Difference-of-means steering direction at ``blocks.{layer}.hook_resid_post``.

    ``mean(resid | target-language tokens) − mean(resid | other languages' tokens)``, each sentence
    its own sequence with BOS prepended, BOS and padding excluded (as in :func:`record`).

    Args:
        corpus: a :class:`Corpus` or ``{language: [sentences]}``.
        target: the language to steer towards.
        layer: the block after which the direction is added.
        beta: strength; the intervention adds ``beta · direction``.
        languages: the other languages (default: all in the corpus but the target).
        balanced: average the other languages' means with equal weight instead of pooling their
            tokens (which lets the largest language dominate).
        positions: default positions of the returned steering (``None`` = as the context says).
    """
    return diffmeans(model, corpus, [target], layer, beta, languages=languages, balanced=balanced,
                     batch_size=batch_size, max_sentences=max_sentences, positions=positions, progress=progress)[0]


def diffmeans(model: Any, corpus: Corpus | dict, targets: list[str], layer, beta=1.0, *,
              languages: list[str] | None = None, balanced: bool = False, batch_size: int = 16,
              max_sentences: int | None = None, positions=None, progress: bool = True) -> list[DiffMean]:
    """:func:`diffmean` for several targets from one pass over the corpus (each language's
    residual sum is read once; every target's direction is then the same arithmetic on them, so
    each equals what :func:`diffmean` gives for that target alone)."""
    texts = corpus.texts if isinstance(corpus, Corpus) else corpus
    if not isinstance(texts, dict):
        raise LangNeuronsError(f"corpus must be a Corpus or a dict of sentence lists, got {type(corpus).__name__}")
    targets = list(targets)
    for target in targets:
        if target not in texts:
            raise LangNeuronsError(f"target language {target!r} is not in the corpus; available: {choices(texts)}")
    pool = list(languages) if languages is not None else list(texts)
    missing = [k for k in pool if k not in texts]
    if missing:
        raise LangNeuronsError(f"language {missing[0]!r} is not in the corpus; available: {choices(texts)}")
    others = {t: [k for k in pool if k != t] for t in targets}
    if any(not o for o in others.values()):
        raise LangNeuronsError("diffmean needs at least one language besides the target")
    n_layers = int(model.cfg.n_layers)
    if not _is_int(layer) or not 0 <= layer < n_layers:
        raise LangNeuronsError(f"layer must be an integer in [0, {n_layers}), got {layer!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise LangNeuronsError(f"batch_size must be a positive integer, got {batch_size!r}")
    beta = _number("beta", beta)
    langs = list(dict.fromkeys([*targets, *pool]))
    sums, counts = _resid_sums(model, {k: texts[k] for k in langs}, int(layer), batch_size, max_sentences,
                               progress, "diffmean " + ",".join(targets))
    empty = [k for k, n in zip(langs, counts.tolist()) if n == 0]
    if empty:
        raise LangNeuronsError(f"no tokens for language(s) {empty}")
    at = {k: i for i, k in enumerate(langs)}
    meta = {"name": model_name(model), "weights_hash": weights_hash(model)}
    out = []
    for t in targets:
        o = [at[k] for k in others[t]]
        mean_t = sums[at[t]] / counts[at[t]]
        other = (sums[o] / counts[o, None]).mean(0) if balanced else sums[o].sum(0) / counts[o].sum()
        n_tokens = {k: int(counts[at[k]]) for k in [t, *others[t]]}
        out.append(DiffMean((mean_t - other).to(torch.float32), int(layer), beta, t, tuple(others[t]), n_tokens,
                            meta, positions))
    return out


def _resid_sums(model: Any, texts: dict, layer: int, batch_size: int, max_sentences: int | None, progress: bool,
                desc: str) -> tuple[Tensor, Tensor]:
    """Per language (in ``texts``' order): the float64 sum of ``hook_resid_post`` of block ``layer``
    over its counted tokens, and their number; the forward pass stops at that hook."""
    from .record import prepare_batches

    max_len = int(getattr(model.cfg, "n_ctx", 2048) or 2048)
    batches, _, _, _ = prepare_batches(model.tokenizer, texts, batch_size, max_len, max_sentences)
    sums = torch.zeros(len(texts), int(model.cfg.d_model), dtype=torch.float64)
    counts = torch.zeros(len(texts), dtype=torch.float64)
    state: dict = {}

    def hook(act: Tensor, hook: Any = None) -> None:
        w = state["counted"].to(act.device, torch.float32).reshape(-1)
        sums[state["k"]] += (w @ act.reshape(-1, act.shape[-1]).float()).double().cpu()
        raise _Stop

    device = model.cfg.device
    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)]):
        for b in tqdm(batches, desc=desc, disable=not progress, leave=False):
            state.update(k=b.language, counted=b.counted)
            counts[b.language] += float(b.counted.sum())
            try:
                model(b.tokens.to(device), attention_mask=b.attention_mask.to(device), return_type=None)
            except _Stop:
                pass
    return sums, counts


# ---------------------------------------------------------------------------------------------
# Running: the hooks


class InterventionHandle:
    """What ``with intervene(...) as handle`` gives: the interventions and the position tracker."""

    def __init__(self, items: list, prompt_length: int | None):
        self.interventions = items
        self._given_prompt_length = prompt_length
        self.reset(prompt_length)

    def reset(self, prompt_length: int | None = None) -> None:
        """Start a new sequence: the next forward call is at position 0 and sets the prompt length
        (unless ``prompt_length`` is given here or was given to :func:`intervene`)."""
        self.prompt_length = prompt_length if prompt_length is not None else self._given_prompt_length
        self.total: int | None = None  # positions of the current sequence seen so far
        self.offset = 0  # absolute position of the current call's first position
        self.length = 0  # positions in the current call
        self.calls = 0

    def _start_call(self, act: Tensor, hook: Any = None) -> None:
        T = act.shape[1]
        if self.total is None:
            self.offset, self.total = 0, T
            if self.prompt_length is None:
                self.prompt_length = T
        elif T == 1:  # a KV-cached step continues the sequence
            self.offset, self.total = self.total, self.total + 1
        else:  # a new pass over a whole sequence
            self.offset, self.total = 0, T
        self.length = T
        self.calls += 1

    def _select(self, positions, T: int, device) -> slice | Tensor | None:
        """The current call's local positions named by ``positions`` (``None``: none)."""
        if positions == "all":
            return slice(None)
        if positions == "last":
            return slice(T - 1, T)
        if self.calls == 0 or T != self.length:
            raise LangNeuronsError("cannot track positions: the forward pass did not go through 'hook_embed'; "
                                   "use positions='all' or 'last'")
        off = self.offset
        if positions in ("prompt", "generated"):
            cut = min(max(self.prompt_length - off, 0), T)
            sel = slice(0, cut) if positions == "prompt" else slice(cut, T)
            return sel if sel.stop > sel.start else None
        local = [p - off for p in positions if off <= p < off + T]
        return torch.tensor(local, device=device) if local else None


def _ix(sel, idx: Tensor) -> tuple:
    """Index ``[:, sel, idx]`` of a ``[batch, pos, n]`` tensor (``sel`` a slice or positions)."""
    return (slice(None), sel, idx) if isinstance(sel, slice) else (slice(None), sel[:, None], idx[None, :])


class _Op:
    """One intervention at one layer, applied inside a hook point's combined hook."""

    def __init__(self, iv: "Intervention", layer: int, positions, times_up: bool):
        self.iv, self.layer, self.positions, self.times_up = iv, layer, positions, times_up
        self.idx_cpu = torch.tensor(iv.layers[layer], dtype=torch.int64)
        self.amount_cpu = iv.amounts.get(layer)
        self._dev: dict = {}

    def tensors(self, device, dtype) -> tuple[Tensor, Tensor | None]:
        key = (str(device), dtype)
        if key not in self._dev:
            amount = None if self.amount_cpu is None else self.amount_cpu.to(device, dtype)
            self._dev[key] = (self.idx_cpu.to(device), amount)
        return self._dev[key]

    def apply(self, x: Tensor, up: Tensor | None, handle: InterventionHandle) -> None:
        sel = handle._select(self.positions, x.shape[1], x.device)
        if sel is None:
            return
        idx, amount = self.tensors(x.device, x.dtype)
        ix, mode = _ix(sel, idx), self.iv.mode
        if mode == "zero":
            x[ix] = 0.0
        elif mode == "scale":
            x[ix] = x[ix] * self.iv.factor
        else:
            if mode == "patch":
                v = self._source(sel, x, handle)
            else:
                v = amount
            if self.times_up:  # gated act: φ(gate) := v means post := v · up
                if up is None:
                    raise LangNeuronsError(f"layer {self.layer}: hook_pre_linear did not fire before hook_post; "
                                           "cannot write φ(gate)")
                v = v * up[ix]
            x[ix] = x[ix] + v if mode == "add" else v

    def _source(self, sel, x: Tensor, handle: InterventionHandle) -> Tensor:
        src = self.iv.source.values[self.layer]
        B, T = x.shape[:2]
        off = handle.offset if handle.calls else 0
        local = torch.arange(T)[sel] if isinstance(sel, slice) else sel.cpu()
        need = int(local.max()) + off + 1
        if src.shape[1] < need:
            raise LangNeuronsError(f"the patch source holds {src.shape[1]} positions; position {need - 1} was asked for")
        if src.shape[0] not in (1, B):
            raise LangNeuronsError(f"the patch source has batch size {src.shape[0]}, the input {B}")
        idx, _ = self.tensors(x.device, x.dtype)
        src = src.to(x.device, x.dtype)
        pos = (local + off).to(x.device)
        return src[:, pos[:, None], idx[None, :]].expand(B, -1, -1)


class _SteerOp:
    def __init__(self, steer: DiffMean, positions):
        self.steer, self.positions = steer, positions
        self._dev: dict = {}

    def apply(self, x: Tensor, up, handle: InterventionHandle) -> None:
        sel = handle._select(self.positions, x.shape[1], x.device)
        if sel is None:
            return
        key = (str(x.device), x.dtype)
        if key not in self._dev:
            self._dev[key] = (self.steer.beta * self.steer.direction.double()).to(x.device, x.dtype)
        x[(slice(None), sel)] += self._dev[key]


def _point_hook(ops: list, handle: InterventionHandle, up_stash: dict | None, layer: int | None):
    """One hook per hook point: copy the activation once, apply the interventions in order."""

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        if act.ndim != 3:
            raise LangNeuronsError(f"expected a [batch, pos, width] activation, got shape {tuple(act.shape)}")
        up = up_stash.pop(layer, None) if up_stash is not None else None
        # A copy, never in place: a hook registered before this one (an ActivationCache, say) may
        # hold a reference to the clean tensor.
        x = act.clone()
        for op in ops:
            op.apply(x, up, handle)
        return x

    return hook


def _stash_hook(stash: dict, layer: int):
    def hook(act: Tensor, hook: Any = None) -> None:
        stash[layer] = act
    return hook


def _as_items(interventions) -> list:
    items = list(interventions) if isinstance(interventions, (list, tuple)) else [interventions]
    bad = [x for x in items if not isinstance(x, (Intervention, DiffMean))]
    if bad:
        raise LangNeuronsError(f"expected an Intervention, a DiffMean or a list of them; got {type(bad[0]).__name__}")
    return items


def _check_models(model: Any, items: list) -> None:
    """Refuse artifacts made on another model: compare weight hashes (skipped where none is recorded)."""
    named = [(what, m) for item in items for what, m in item.models() if m.get("weights_hash")]
    if not named:
        return
    mine, name = weights_hash(model), model_name(model)
    for what, m in named:
        if m["weights_hash"] != mine:
            raise LangNeuronsError(f"{what} comes from model {m.get('name')!r} (weights {m['weights_hash']!r}), "
                                   f"but this model is {name!r} (weights {mine!r})")


def make_hooks(model: Any, interventions, positions="all", prompt_length=None
               ) -> tuple[list[tuple[str, Callable]], InterventionHandle]:
    """The hook factory behind :func:`intervene`: ``(fwd_hooks, handle)`` for ``model.hooks(...)``
    or ``model.run_with_hooks(...)``. Checks everything first; the hooks share ``handle``'s
    position tracker, so use them together and for one context at a time."""
    items = _as_items(interventions)
    positions = _positions(positions)
    if prompt_length is not None and (not _is_int(prompt_length) or prompt_length < 0):
        raise LangNeuronsError(f"prompt_length must be an integer ≥ 0, got {prompt_length!r}")
    _check_models(model, items)
    handle = InterventionHandle(items, prompt_length)
    gated = is_gated(model)
    n_layers, d_mlp, d_model = int(model.cfg.n_layers), int(model.cfg.d_mlp), int(model.cfg.d_model)
    points: dict[str, list] = {}  # hook name → ops, in the order given
    stash_layers: set[int] = set()
    tracked = False
    for item in items:
        pos = item.positions if item.positions is not None else positions
        # patching reads the source at absolute positions, so it needs them even at "all"
        tracked |= pos != "all" or getattr(item, "mode", None) == "patch"
        if isinstance(item, DiffMean):
            if item.layer >= n_layers or item.direction.shape != (d_model,):
                raise LangNeuronsError(f"the diffmean direction (layer {item.layer}, width {item.direction.shape[0]}) "
                                       f"does not fit this model ({n_layers} layers, d_model={d_model})")
            points.setdefault(item.hook_name, []).append(_SteerOp(item, pos))
            continue
        shape = (item.neurons.n_layers, item.neurons.d_mlp) if isinstance(item.neurons, LanguageNeurons) else None
        if shape is not None and shape != (n_layers, d_mlp):
            raise LangNeuronsError(f"the neuron set is for {shape[0]} layers × {shape[1]} neurons, "
                                   f"this model has {n_layers} × {d_mlp}")
        item._check_range(n_layers, d_mlp, "this model")
        site = resolve_site(model, item.site)  # raises if the model lacks the site's hooks
        times_up = gated and item.site == "act" and item.mode in ("set", "add", "patch")
        for layer in item.layers:
            # pre is written where it is read; post, non-gated act (= post) and gated act (zero/scale
            # of φ(gate) = zero/scale of post; set/add/patch as v · up) on hook_post
            name = site.hook_names[layer] if item.site == "pre" else f"blocks.{layer}.mlp.hook_post"
            points.setdefault(name, []).append(_Op(item, layer, pos, times_up))
            if times_up:
                stash_layers.add(layer)
    stash: dict[int, Tensor] = {}
    hooks: list[tuple[str, Callable]] = []
    if tracked:
        start = next((n for n in ("hook_embed", "blocks.0.hook_resid_pre") if n in model.hook_dict), None)
        if start is None:
            raise LangNeuronsError("this model has no 'hook_embed' to track positions; use positions='all' or 'last'")
        hooks.append((start, handle._start_call))
    for layer in sorted(stash_layers):
        name = f"blocks.{layer}.mlp.hook_pre_linear"
        if name not in model.hook_dict:
            raise LangNeuronsError(f"this gated model has no hook {name!r} to read up from")
        hooks.append((name, _stash_hook(stash, layer)))
    for name, ops in points.items():
        layer = ops[0].layer if isinstance(ops[0], _Op) else None
        writes_post = name.endswith("mlp.hook_post") and layer in stash_layers
        hooks.append((name, _point_hook(ops, handle, stash if writes_post else None, layer)))
    return hooks, handle


@contextmanager
def intervene(model: Any, neurons, mode: str | None = None, *, value=None, factor=None, stats=None,
              statistic: str = "mean", language: str | None = None, site: str | None = None, source=None,
              positions="all", prompt_length=None) -> Iterator[InterventionHandle]:
    """Intervene on neurons (or steer the residual stream) for the duration of a ``with`` block.

    ``neurons`` is a :class:`LanguageNeurons` / ``{layer: [indices]}`` dict together with ``mode``
    and its arguments (see :class:`Intervention`), or an :class:`Intervention`, a
    :class:`DiffMean`, or a list of them, applied in order (at the same hook point, each sees the
    result of the ones before it). ``positions`` and ``prompt_length`` are described in the
    module docstring; an item's own ``positions`` overrides the context's.

    Every check happens before any hook is added. On leaving the block — normally or by an
    exception — exactly the hooks this call added are removed (``model.hooks`` does this); hooks
    the caller added before stay.
    """
    if isinstance(neurons, (LanguageNeurons, dict)):
        if mode is None:
            raise LangNeuronsError(f"intervene needs a mode; allowed: {choices(MODES)}")
        items = [Intervention(neurons, mode, value, factor, stats, statistic, language, site, source)]
    else:
        if not isinstance(neurons, (Intervention, DiffMean, list, tuple)):
            raise LangNeuronsError(f"intervene takes a LanguageNeurons, a {{layer: [indices]}} dict, an Intervention, "
                                   f"a DiffMean or a list of them; got {type(neurons).__name__}")
        given = [k for k, v in (("mode", mode), ("value", value), ("factor", factor), ("stats", stats),
                                ("language", language), ("site", site), ("source", source)) if v is not None]
        if given or statistic != "mean":
            raise LangNeuronsError(f"{(given or ['statistic'])[0]}= belongs inside each Intervention "
                                   "when intervene is given Interventions")
        items = _as_items(neurons)
    hooks, handle = make_hooks(model, items, positions, prompt_length)
    with model.hooks(fwd_hooks=hooks):
        yield handle
