"""The trainable parameters of each fine-tuning method, attached to a Hugging Face model.

* ``masked-lora`` (Mondal et al. 2025): LoRA (peft) on the MLP projections whose update is
  restricted to the mask's neurons — ``gate_proj``/``up_proj`` rows (their output is the neuron),
  ``down_proj`` columns (its input is) — plus, by default, unmasked LoRA on the attention
  projections, as Mondal did. peft has no row restriction; a LoRA layer's update is
  ``ΔW = s · B A``, so the mask is a parametrization of ``B`` (rows) or ``A`` (columns): the
  masked entries are exactly 0 in every forward pass, receive no gradient, and ``ΔW`` is exactly 0
  outside the selected rows/columns — merged or not.
* ``selected-rows`` (Gurgurov et al. 2025): a full-rank update of exactly the selected rows of
  ``gate_proj``/``up_proj`` and columns of ``down_proj``, everything else frozen.
* ``attention-only`` — LoRA on the attention projections only (Mondal's "null" baseline).
* ``full-lora`` — unmasked LoRA on the same MLP projections (and attention, like masked-lora).

Training happens on a plain Hugging Face model loaded from the model's folder (peft's own ground);
the result is used merged (:func:`.adapter.merged_folder`) or unmerged (peft's adapter format).
"""

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from torch.nn.utils import parametrize

from .. import _checks
from ..errors import LangNeuronsError, choices
from .masks import NeuronMask

METHODS = ("masked-lora", "selected-rows", "attention-only", "full-lora")
MLP = ("gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
COLUMNS_ARE_NEURONS = ("down_proj",)  # its input is the neuron; the others' output is


@dataclass(frozen=True)
class FinetuneConfig:
    """What to train and how. Defaults: Mondal's masked LoRA (``gate_proj``, r 8, α 16, attention
    LoRA on) at Gurgurov's learning rate 1e-4 (Mondal's 1e-5 barely moves a small model in one
    epoch of a few hundred examples). ``matrices`` (the MLP projections updated) default to
    Mondal's ``("gate_proj",)`` for the LoRA methods and Gurgurov's ``MLP`` (gate and up rows,
    down columns) for ``selected-rows``."""

    method: str = "masked-lora"
    matrices: tuple | None = None
    attention: bool = True
    r: int = 8
    alpha: float = 16.0
    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 8
    max_length: int = 128
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise LangNeuronsError(f"unknown fine-tuning method {self.method!r}; allowed: {choices(METHODS)}")
        if self.matrices is None:
            object.__setattr__(self, "matrices", MLP if self.method == "selected-rows" else ("gate_proj",))
        object.__setattr__(self, "matrices", tuple(self.matrices))
        bad = [m for m in self.matrices if m not in MLP]
        if bad or not self.matrices or len(set(self.matrices)) != len(self.matrices):
            raise LangNeuronsError(f"matrices must be distinct names of {choices(MLP)}, got {self.matrices!r}")
        _checks.boolean("attention", self.attention)
        for name in ("r", "epochs", "batch_size", "max_length"):
            _checks.positive_int(name, getattr(self, name))
        _checks.positive("alpha", self.alpha)
        _checks.positive("lr", self.lr)
        _checks.number("weight_decay", self.weight_decay)
        _checks.integer("seed", self.seed, 0)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def uses_mask(self) -> bool:
        return self.method in ("masked-lora", "selected-rows")

    @property
    def lora(self) -> bool:
        return self.method != "selected-rows"


def layer_modules(hf) -> dict[str, dict[int, str]]:
    """``{projection: {layer: module name}}`` of a Llama-style decoder (Llama, Gemma, Qwen,
    Mistral …: ``…layers.{i}.mlp.gate_proj`` and ``…layers.{i}.self_attn.q_proj``)."""
    names = {n for n, _ in hf.named_modules()}
    first = next((n for n in sorted(names) if n.endswith("layers.0.mlp.gate_proj")), None)
    if first is None:
        raise LangNeuronsError(f"fine-tuning needs a gated MLP with gate_proj/up_proj/down_proj (Llama, Gemma, Qwen, "
                               f"Mistral); {type(hf).__name__} has none")
    prefix = first[: -len("0.mlp.gate_proj")]
    n_layers = int(hf.config.num_hidden_layers)
    out = {}
    for proj in MLP + ATTENTION:
        part = "mlp" if proj in MLP else "self_attn"
        out[proj] = {i: f"{prefix}{i}.{part}.{proj}" for i in range(n_layers)}
        missing = [n for n in out[proj].values() if n not in names]
        if missing:
            raise LangNeuronsError(f"the model has no module {missing[0]!r}")
    return out


class RowMask(torch.nn.Module):
    """``W ↦ W ⊙ m``: rows (``dim=0``) or columns (``dim=1``) outside ``index`` are exactly 0."""

    def __init__(self, size: int, index: Int64[Tensor, " k"], dim: int):
        super().__init__()
        m = torch.zeros(size)
        m[index] = 1.0
        self.dim = dim
        self.register_buffer("m", m)

    def forward(self, w: Float[Tensor, "rows cols"]) -> Float[Tensor, "rows cols"]:
        m = self.m.to(w.dtype)
        return w * (m[:, None] if self.dim == 0 else m[None, :])


class SelectedDelta(torch.nn.Module):
    """``W ↦ W`` with ``delta`` added to the selected rows (``dim=0``) or columns (``dim=1``):
    every other entry is W's own value, bit for bit."""

    def __init__(self, weight: Float[Tensor, "rows cols"], index: Int64[Tensor, " k"], dim: int):
        super().__init__()
        shape = (len(index), weight.shape[1]) if dim == 0 else (weight.shape[0], len(index))
        self.dim = dim
        self.register_buffer("index", index.clone())
        self.delta = torch.nn.Parameter(torch.zeros(shape, dtype=weight.dtype, device=weight.device))

    def forward(self, w: Float[Tensor, "rows cols"]) -> Float[Tensor, "rows cols"]:
        out = w.clone()
        if self.dim == 0:
            out[self.index] = w[self.index] + self.delta
        else:
            out[:, self.index] = w[:, self.index] + self.delta
        return out


def _module(hf, name: str) -> torch.nn.Module:
    return hf.get_submodule(name)


def _lora_targets(config: FinetuneConfig, mods: dict, mask: NeuronMask | None) -> list[str]:
    targets = []
    if config.method != "attention-only":
        layers = sorted(mask.layers) if config.uses_mask else sorted(mods["gate_proj"])
        targets += [mods[m][i] for m in config.matrices for i in layers]
    if config.attention or config.method == "attention-only":
        targets += [mods[p][i] for p in ATTENTION for i in sorted(mods[p])]
    return targets


def attach(hf, config: FinetuneConfig, mask: NeuronMask | None):
    """``(model to train, {parameter name: parameter} trained)``: ``hf`` wrapped by peft (LoRA
    methods) or parametrized in place (``selected-rows``); everything else frozen."""
    if config.uses_mask and mask is None:
        raise LangNeuronsError(f"method {config.method!r} needs a neuron mask")
    mods = layer_modules(hf)
    # the width of the down projection's input, as the package reads it everywhere (models.mlp_width)
    shape = (len(mods["down_proj"]), int(_module(hf, mods["down_proj"][0]).in_features))
    if config.uses_mask and (mask.n_layers, mask.d_mlp) != shape:
        raise LangNeuronsError(f"the mask is for {mask.n_layers} layers × {mask.d_mlp} neurons, the model has "
                               f"{shape[0]} × {shape[1]}")
    for p in hf.parameters():
        p.requires_grad_(False)
    if config.method == "selected-rows":
        for m in config.matrices:
            dim = 1 if m in COLUMNS_ARE_NEURONS else 0
            for layer in mask.layers:
                lin = _module(hf, mods[m][layer])
                parametrize.register_parametrization(lin, "weight", SelectedDelta(lin.weight, mask.index(layer), dim))
        trained = {n: p for n, p in hf.named_parameters() if n.endswith(".delta")}
        for p in trained.values():
            p.requires_grad_(True)
        return hf, trained
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=0.0, bias="none",
                      target_modules=_lora_targets(config, mods, mask))
    peft_model = get_peft_model(hf, lcfg)
    if config.method == "masked-lora":
        base = peft_model.base_model.model
        for m in config.matrices:
            for layer in mask.layers:
                lora = _module(base, mods[m][layer])
                if m in COLUMNS_ARE_NEURONS:  # ΔW = B A: columns of A are the neurons (inputs)
                    a = lora.lora_A["default"]
                    parametrize.register_parametrization(a, "weight", RowMask(a.weight.shape[1], mask.index(layer), 1))
                else:  # rows of B are the neurons (outputs)
                    b = lora.lora_B["default"]
                    parametrize.register_parametrization(b, "weight", RowMask(b.weight.shape[0], mask.index(layer), 0))
    trained = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    return peft_model, trained


def bake(model) -> None:
    """Replace every mask parametrization by the masked weight it stands for (so that peft saves
    and merges plain tensors that are exactly 0 outside the mask)."""
    for mod in list(model.modules()):
        if parametrize.is_parametrized(mod) and any(isinstance(p, RowMask) for p in mod.parametrizations["weight"]):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
