"""Which MLP neurons a fine-tuning may change: a neuron set's languages (or their union), or a
random control with the same number of neurons in every layer."""

from dataclasses import dataclass

import torch
from jaxtyping import Int64
from torch import Tensor

from ..errors import LangNeuronsError, choices
from ..identify import random_like
from ..neurons import LanguageNeurons


@dataclass(frozen=True)
class NeuronMask:
    """Neuron indices per layer (``{layer: (i, ...)}``, sorted, only layers that have some), of a
    model with ``n_layers`` × ``d_mlp`` neurons; ``languages`` and ``kind`` (``neurons`` or
    ``random``, with its ``seed``) say where they came from."""

    layers: dict
    n_layers: int
    d_mlp: int
    languages: tuple
    kind: str = "neurons"
    seed: int | None = None

    def count(self) -> int:
        return sum(len(v) for v in self.layers.values())

    def per_layer(self) -> dict[int, int]:
        return {layer: len(v) for layer, v in self.layers.items()}

    def index(self, layer: int) -> Int64[Tensor, " k"]:
        return torch.tensor(self.layers.get(layer, ()), dtype=torch.long)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "languages": list(self.languages), "n_layers": self.n_layers,
                "d_mlp": self.d_mlp, "layers": {str(k): list(v) for k, v in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "NeuronMask":
        return cls({int(k): tuple(v) for k, v in d["layers"].items()}, int(d["n_layers"]), int(d["d_mlp"]),
                   tuple(d["languages"]), d.get("kind", "neurons"), d.get("seed"))


def neuron_mask(neurons: LanguageNeurons, languages) -> NeuronMask:
    """The union of ``languages``' neurons in ``neurons``."""
    if not isinstance(neurons, LanguageNeurons):
        raise LangNeuronsError(f"neurons must be a LanguageNeurons set, got {type(neurons).__name__}")
    if neurons.site not in ("act", "pre", "post"):
        # the mask selects MLP neurons (down-projection columns); a linear output or an SAE feature
        # of the same width (`up` has d_mlp of them) is another unit and must not pass as one
        raise LangNeuronsError(f"fine-tuning masks select MLP neurons (sites act, pre, post); this neuron set is at "
                               f"site {neurons.site!r}")
    languages = [languages] if isinstance(languages, str) else list(languages)
    missing = [k for k in languages if k not in neurons]
    if missing or not languages:
        raise LangNeuronsError(f"unknown language {(missing or [None])[0]!r} for the mask; the neuron set has: "
                               f"{choices(neurons.languages)}")
    layers: dict[int, set] = {}
    for k in languages:
        for layer, idx in neurons.by_layer(k).items():
            layers.setdefault(int(layer), set()).update(int(i) for i in idx)
    if not layers:
        raise LangNeuronsError(f"the neuron set has no neurons of {choices(languages)}: nothing to fine-tune")
    return NeuronMask({k: tuple(sorted(v)) for k, v in sorted(layers.items())}, neurons.n_layers, neurons.d_mlp,
                      tuple(languages))


def random_mask(mask: NeuronMask, seed: int = 0) -> NeuronMask:
    """The random control of ``mask``: as many neurons in each layer, drawn uniformly
    (:func:`~.identify.random_like`, seeded)."""
    label = "+".join(mask.languages)
    as_set = LanguageNeurons({label: [(layer, i) for layer, idx in mask.layers.items() for i in idx]}, "mask", {},
                             "act", {}, mask.n_layers, mask.d_mlp)
    drawn = random_like(as_set, seed).by_layer(label)
    return NeuronMask({int(k): tuple(sorted(int(i) for i in v)) for k, v in sorted(drawn.items())}, mask.n_layers,
                      mask.d_mlp, mask.languages, "random", int(seed))
