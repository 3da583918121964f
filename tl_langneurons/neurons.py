"""Sets of language-specific neurons: the result of identification, the input of interventions.

A :class:`LanguageNeurons` holds, per language, a sorted list of ``(layer, index)`` pairs at one
neuron site of one model, with the method and parameters that chose them. It is saved as one small
JSON file (a few thousand pairs per language), which people read, diff and publish; tensors would
buy nothing at this size.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool
from torch import Tensor

from . import _checks
from ._io import atomic_write_text, read_json, safe_name
from .errors import LangNeuronsError, choices
from .identity import compatible

NEURONS_FORMAT = "tl_langneurons.neurons/1"
NEURONS_JSON = "neurons.json"


def _normalise(neurons, n_layers: int, d_mlp: int) -> dict[str, list[tuple[int, int]]]:
    """Check every pair and return ``{lang: sorted unique [(layer, index)]}`` of plain ints."""
    if not isinstance(neurons, dict):
        raise LangNeuronsError(f"neurons must be a dict {{language: [(layer, index), ...]}}, got {type(neurons).__name__}")
    clean = {}
    for lang, pairs in neurons.items():
        if not isinstance(lang, str) or not lang:
            raise LangNeuronsError(f"language names must be non-empty strings, got {lang!r}")
        safe_name("language", lang)  # it names folders and files of results
        if not isinstance(pairs, (list, tuple)):
            raise LangNeuronsError(f"neurons of {lang!r} must be a list of (layer, index) pairs, got {pairs!r}")
        out = set()
        for pair in pairs:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_checks.is_int(v) for v in pair):
                raise LangNeuronsError(f"neuron of {lang!r} must be a (layer, index) pair of integers, got {pair!r}")
            layer, index = int(pair[0]), int(pair[1])
            if not 0 <= layer < n_layers:
                raise LangNeuronsError(f"neuron {pair!r} of {lang!r}: layer {layer} out of range [0, {n_layers})")
            if not 0 <= index < d_mlp:
                raise LangNeuronsError(f"neuron {pair!r} of {lang!r}: index {index} out of range [0, {d_mlp})")
            out.add((layer, index))
        clean[lang] = sorted(out)
    return clean


@dataclass(frozen=True)
class LanguageNeurons:
    """Per-language neuron sets at one site of one model.

    ``neurons[lang]`` is a sorted list of unique ``(layer, index)`` pairs; pairs given in any order
    or repeated are normalised on construction, so two sets with the same neurons compare equal.
    ``model`` is the model fingerprint of the statistics they came from (``{}`` for synthetic
    statistics); :meth:`check_compatible` uses its ``weights_hash``.
    """

    neurons: dict[str, list[tuple[int, int]]]
    method: str
    params: dict
    site: str
    model: dict
    n_layers: int
    d_mlp: int

    def __post_init__(self):
        for name in ("n_layers", "d_mlp"):
            _checks.positive_int(name, getattr(self, name))
        clean = _normalise(self.neurons, self.n_layers, self.d_mlp)
        # frozen: normalise through object.__setattr__, once, before anyone can see the object
        object.__setattr__(self, "neurons", clean)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "model", dict(self.model or {}))

    # -- access ----------------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        return list(self.neurons)

    def _lang(self, lang: str) -> list[tuple[int, int]]:
        if lang not in self.neurons:
            raise LangNeuronsError(f"language {lang!r} is not in this neuron set; available: {choices(self.neurons)}")
        return self.neurons[lang]

    def __getitem__(self, lang: str) -> "LanguageNeurons":
        """The set restricted to one language (what an intervention on that language needs)."""
        return self.select([lang])

    def __len__(self) -> int:
        return len(self.neurons)

    def __contains__(self, lang: object) -> bool:
        return lang in self.neurons

    def select(self, languages: list[str]) -> "LanguageNeurons":
        """The sets of a subset of languages, in the given order."""
        if isinstance(languages, str):
            languages = [languages]
        return LanguageNeurons({k: list(self._lang(k)) for k in languages}, self.method, self.params, self.site,
                               self.model, self.n_layers, self.d_mlp)

    def by_layer(self, lang: str | None = None) -> dict[int, list[int]]:
        """``{layer: [indices]}`` for one language, only layers that hold any of its neurons.

        ``lang`` may be left out when the set holds exactly one language.
        """
        if lang is None:
            if len(self.neurons) != 1:
                raise LangNeuronsError(f"by_layer() needs a language when the set holds {len(self.neurons)}; "
                                       f"available: {choices(self.neurons)}")
            lang = next(iter(self.neurons))
        out: dict[int, list[int]] = {}
        for layer, index in self._lang(lang):
            out.setdefault(layer, []).append(index)
        return out

    def mask(self, lang: str) -> Bool[Tensor, "layer d_mlp"]:
        m = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.bool)
        pairs = self._lang(lang)
        if pairs:
            idx = torch.tensor(pairs, dtype=torch.int64)
            m[idx[:, 0], idx[:, 1]] = True
        return m

    def masks(self) -> Bool[Tensor, "lang layer d_mlp"]:
        """One mask per language, in :attr:`languages` order."""
        if not self.neurons:
            return torch.zeros(0, self.n_layers, self.d_mlp, dtype=torch.bool)
        return torch.stack([self.mask(k) for k in self.neurons])

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.neurons.items()}

    def union(self) -> list[tuple[int, int]]:
        """Every neuron of any language, sorted, each once."""
        return sorted({pair for pairs in self.neurons.values() for pair in pairs})

    # -- compatibility ---------------------------------------------------------------------

    def check_compatible(self, other: "LanguageNeurons") -> None:
        """Raise if ``other`` comes from another model, site or shape."""
        if other.site != self.site:
            raise LangNeuronsError(f"neuron sets from different sites: {self.site!r} and {other.site!r}")
        compatible(self.model, other.model, "the first neuron set", "the second")
        if (self.n_layers, self.d_mlp) != (other.n_layers, other.d_mlp):
            raise LangNeuronsError(f"neuron sets of different shapes: ({self.n_layers}, {self.d_mlp}) "
                                   f"and ({other.n_layers}, {other.d_mlp})")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, layers: dict[int, list[int]], language: str, *, n_layers: int, d_mlp: int, site: str = "act",
                  model: dict | None = None, method: str = "manual", params: dict | None = None) -> "LanguageNeurons":
        """A one-language set from a plain ``{layer: [indices]}`` dict (hand-picked neurons, a paper's list)."""
        if not isinstance(layers, dict):
            raise LangNeuronsError(f"layers must be a dict {{layer: [indices]}}, got {type(layers).__name__}")
        pairs = []
        for layer, indices in layers.items():
            if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
                raise LangNeuronsError(f"layer {layer!r}: indices must be a list of integers, got {indices!r}")
            pairs.extend((layer, i) for i in indices)
        return cls({language: pairs}, method, dict(params or {}), site, dict(model or {}), n_layers, d_mlp)

    # -- files -----------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "format": NEURONS_FORMAT,
            "method": self.method,
            "params": self.params,
            "site": self.site,
            "model": self.model,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "neurons": {k: [list(p) for p in v] for k, v in self.neurons.items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically to ``path`` (a ``.json`` file) or to ``path/neurons.json``."""
        p = _json_path(path, for_writing=True)
        d = self.to_json()
        try:
            head = json.dumps({k: v for k, v in d.items() if k != "neurons"}, indent=1, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise LangNeuronsError(f"params or model of this neuron set are not JSON-serialisable: {e}") from None
        # one line per language: indent=1 would spend four lines on every pair
        langs = ",\n".join(f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, separators=(',', ':'))}"
                           for k, v in d["neurons"].items())
        text = head[:-2] + ',\n "neurons": {' + (f"\n{langs}\n }}" if langs else "}") + "\n}\n"
        atomic_write_text(p, text)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LanguageNeurons":
        p = _json_path(path, for_writing=False)
        if not p.is_file():
            raise LangNeuronsError(f"no neuron set at {str(path)!r}: expected a .json file or a directory with {NEURONS_JSON}")
        d = read_json(p, "neuron set")
        if not isinstance(d, dict) or d.get("format") != NEURONS_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise LangNeuronsError(f"{str(p)!r} is not a neuron set: format {got!r}, expected {NEURONS_FORMAT!r}")
        missing = [k for k in ("method", "params", "site", "model", "n_layers", "d_mlp", "neurons") if k not in d]
        if missing:
            raise LangNeuronsError(f"{str(p)!r} lacks the field(s) {choices(missing)}")
        if not isinstance(d["neurons"], dict) or not all(isinstance(v, list) for v in d["neurons"].values()):
            raise LangNeuronsError(f"{str(p)!r}: 'neurons' must map languages to lists of [layer, index] pairs")
        for k, v in (("params", d["params"]), ("model", d["model"])):
            if not isinstance(v, dict):
                raise LangNeuronsError(f"{str(p)!r}: {k!r} must be an object, got {v!r}")
        for k in ("method", "site"):
            if not isinstance(d[k], str):
                raise LangNeuronsError(f"{str(p)!r}: {k!r} must be a string, got {d[k]!r}")
        try:
            # validated here, not only in __post_init__, so that the constructor gets clean types
            for k in ("n_layers", "d_mlp"):
                _checks.positive_int(k, d[k])
            neurons = _normalise(d["neurons"], d["n_layers"], d["d_mlp"])
        except LangNeuronsError as e:
            raise LangNeuronsError(f"{str(p)!r}: {e}") from None
        return cls(neurons, d["method"], d["params"], d["site"], d["model"], d["n_layers"], d["d_mlp"])


def _json_path(path: str | os.PathLike, for_writing: bool) -> Path:
    p = Path(path)
    if p.suffix.lower() == ".json":
        if for_writing:
            p.parent.mkdir(parents=True, exist_ok=True)
        return p
    if for_writing:
        p.mkdir(parents=True, exist_ok=True)
    return p / NEURONS_JSON
