"""What to do to which neurons: :class:`Intervention` (and :class:`DiffMean` on the residual stream),
frozen and validated on construction; :class:`SiteCache`, the source of ``patch``.

    with intervene(model, neurons["de"], "set", stats=stats, statistic="mean", factor=16):
        model.generate("The weather today", max_new_tokens=20, do_sample=False)

    # Gurgurov's language arithmetic: switch the source language off, add the target's mean
    with intervene(model, [Intervention(neurons["fr"], "set", value=0.0),
                           Intervention(neurons["de"], "add", factor=1.0, stats=stats)]):
        ...

The modes (``zero``, ``set``, ``scale``, ``add``, ``patch``, and any registered since) and the
arguments each takes are :mod:`.modes`'s registry (methods page:
[interventions](methods.md#interventions)).

Statistics (``statistic=``): ``mean`` (over tokens), ``median`` / ``max`` / ``min`` (of the
language's per-sentence means), ``q0.9`` (any quantile over tokens, read from the histogram).
"""

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..identity import compatible
from ..neurons import LanguageNeurons
from ..stats import SENTENCE_STATS, NeuronStats
from ..units import check_site_name
from .modes import ARGUMENTS, get_mode

POSITIONS = ("all", "prompt", "generated", "last")
# what a missing argument is, in the error naming it
_WHAT = {"value": " (a constant)", "stats": " (a statistic)"}
_NEEDS = {"factor": "α", "source": " a SiteCache (from cache_site_activations)"}
STATISTICS = ("mean", *SENTENCE_STATS[1:], "q<quantile>")  # mean over tokens; median/max/min of sentence means


# ---------------------------------------------------------------------------------------------
# Argument checks


def check_positions(v) -> str | tuple[int, ...]:
    if isinstance(v, str):
        if v not in POSITIONS:
            raise LangNeuronsError(f"unknown positions {v!r}; allowed: {choices(POSITIONS)} or a list of positions")
        return v
    if isinstance(v, Tensor):
        v = v.reshape(-1).tolist() if v.ndim <= 1 and not v.is_floating_point() else v
    if isinstance(v, (list, tuple, range)) and all(_checks.is_int(p) and p >= 0 for p in v):
        return tuple(sorted({int(p) for p in v}))
    raise LangNeuronsError(f"positions must be one of {choices(POSITIONS)} or a list of positions ≥ 0, got {v!r}")


def check_statistic(v) -> str:
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


def layers_of_dict(d: dict) -> dict[int, tuple[int, ...]]:
    out = {}
    for layer, indices in d.items():
        if not _checks.is_int(layer) or layer < 0:
            raise LangNeuronsError(f"neuron layers must be integers ≥ 0, got {layer!r}")
        if isinstance(indices, Tensor):
            indices = indices.reshape(-1).tolist()
        if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
            raise LangNeuronsError(f"layer {layer}: indices must be a list of integers, got {indices!r}")
        indices = list(indices)
        if not all(_checks.is_int(i) and i >= 0 for i in indices):
            raise LangNeuronsError(f"layer {layer}: indices must be integers ≥ 0, got {indices!r}")
        if indices:
            out[int(layer)] = tuple(sorted({int(i) for i in indices}))
    return dict(sorted(out.items()))


def stats_values(stats: NeuronStats, language: str, statistic: str) -> Float[Tensor, "layer d_mlp"]:
    one = stats.select([language])  # only this language's sentences / histogram are touched
    if statistic == "mean":
        return one.mean()[0]
    if statistic in SENTENCE_STATS:
        return one.sentence_stat(statistic)[0]
    return one.quantile(float(statistic[1:]))[0]


def as_items(interventions) -> list:
    """``None`` → ``[]``; one :class:`Intervention` / :class:`DiffMean` or a list of them → a list."""
    if interventions is None:
        return []
    items = list(interventions) if isinstance(interventions, (list, tuple)) else [interventions]
    bad = [x for x in items if not isinstance(x, (Intervention, DiffMean))]
    if bad:
        raise LangNeuronsError(f"interventions must be an Intervention, a DiffMean or a list of them, "
                               f"got {type(bad[0]).__name__}")
    return items


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


# ---------------------------------------------------------------------------------------------
# What to do


@dataclass(frozen=True, eq=False)
class Intervention:
    """One intervention on one set of neurons; validates itself on construction.

    Args:
        neurons: a :class:`LanguageNeurons` (one language, or the one named by ``language``) or a
            plain ``{layer: [indices]}`` dict (then ``site`` says where they are; default ``act``).
        mode: a registered mode's name (:mod:`.modes`: ``zero``, ``set``, ``scale``, ``add``, ``patch``).
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
        mode = get_mode(self.mode)
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
            put("layers", layers_of_dict(self.neurons))
            put("site", "act" if self.site is None else self.site)
        else:
            raise LangNeuronsError("neurons must be a LanguageNeurons or a {layer: [indices]} dict, "
                                   f"got {type(self.neurons).__name__}")
        check_site_name(self.site)  # a registered unit kind (its model is checked by intervene)
        if self.positions is not None:
            put("positions", check_positions(self.positions))
        put("statistic", check_statistic(self.statistic))
        # -- which arguments the mode takes (the registry says)
        m, given = self.mode, {k for k in ARGUMENTS if getattr(self, k) is not None}
        extra = sorted(given - set(mode.takes))
        if extra:
            raise LangNeuronsError(f"mode {m!r} takes no {extra[0]} (got {getattr(self, extra[0])!r}); "
                                   f"it takes: {choices(sorted(mode.takes)) or 'nothing'}")
        missing = [k for k in mode.required if k not in given]
        if missing:
            raise LangNeuronsError(f"mode {m!r} needs {missing[0]}=" + _NEEDS.get(missing[0], ""))
        got = sorted(given & set(mode.one_of))
        if mode.one_of and len(got) != 1:
            raise LangNeuronsError(f"mode {m!r} needs exactly one of "
                                   + " or ".join(f"{k}={_WHAT.get(k, '')}" for k in mode.one_of)
                                   + f"; got {'neither' if not got else 'both' if len(got) == 2 else ', '.join(got)}")
        if self.statistic != "mean" and self.stats is None:
            raise LangNeuronsError(f"statistic={self.statistic!r} needs stats= (the recorded statistics to read it from)")
        if self.source is not None and not isinstance(self.source, SiteCache):
            raise LangNeuronsError(f"mode {m!r} needs source= a SiteCache (from cache_site_activations), "
                                   f"got {type(self.source).__name__}")
        put("factor", _checks.number("factor", self.factor, allow_none=True))
        put("value", _checks.number("value", self.value, allow_none=True))
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
                compatible(self.neurons.model, self.stats.model, "the neuron set", "the statistics")
            table = stats_values(self.stats, lang, self.statistic)
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
            out.append(("the statistics", self.stats.model))
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
        object.__setattr__(self, "beta", _checks.number("beta", self.beta))
        if self.positions is not None:
            object.__setattr__(self, "positions", check_positions(self.positions))

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    def with_beta(self, beta) -> "DiffMean":
        """The same direction with another strength (no need to re-read the corpus)."""
        return replace(self, beta=_checks.number("beta", beta))

    def models(self) -> list[tuple[str, dict]]:
        return [("the diffmean direction", self.model)]

    def __repr__(self) -> str:
        return (f"DiffMean(target={self.target!r}, layer={self.layer}, beta={self.beta}, "
                f"|direction|={float(self.direction.norm()):.4g}, others={list(self.others)})")
