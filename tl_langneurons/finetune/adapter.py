"""A trained update, saved and loaded: safetensors + JSON, usable merged or unmerged.

A folder written by :meth:`Adapter.save` holds

* ``adapter.safetensors`` — the trained tensors (LoRA ``A``/``B`` under peft's names, already
  masked; or ``selected-rows``' deltas and the rows they belong to);
* ``adapter.json`` — format ``tl_langneurons.adapter/1``: the method and its settings, the neuron
  mask (layer → indices; ``kind`` ``neurons`` or ``random``), the base model, the training data,
  the loss per step;
* ``peft/`` (LoRA methods) — the same LoRA in peft's own format, so that
  ``peft.PeftModel.from_pretrained(hf_model, "DIR/peft")`` loads it unmerged anywhere.

:func:`apply_adapter` puts it on a Hugging Face model merged (weights edited) or unmerged (peft
LoRA layers, or a parametrization adding the deltas); :func:`merged_folder` writes a merged Hugging
Face model folder that :func:`~.load_model` and ``transformers`` load like any model;
:func:`load_finetuned` gives the TransformerLens model directly.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils import parametrize

import os

from .._io import atomic_write_text, make_out_dir, read_json, sha256
from ..errors import LangNeuronsError
from .masks import NeuronMask
from .methods import COLUMNS_ARE_NEURONS, FinetuneConfig, SelectedDelta, layer_modules

ADAPTER_FORMAT = "tl_langneurons.adapter/1"


def base_model(model: Any, device: str | None = None):
    """``(fresh float32 Hugging Face model, tokenizer, {"model": name})`` of what ``model`` names:
    a name or folder :func:`~.load_model` accepts, or a model it loaded (its name is remembered)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..sources import local_folder

    name = model if isinstance(model, str) else getattr(model, "_tl_langneurons_name", None)
    if name is None:
        raise LangNeuronsError(f"fine-tuning needs a model name or folder (or a model load_model loaded); got "
                               f"{type(model).__name__}")
    _, where = local_folder(str(name))
    tokenizer = AutoTokenizer.from_pretrained(where)
    hf = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32).to(device or "cpu")
    return hf, tokenizer, {"model": str(name), "folder": str(where)}


@dataclass
class Adapter:
    """What :func:`~.finetune.finetune` returns (see the module docstring for the files)."""

    config: FinetuneConfig
    mask: NeuronMask | None
    base: dict
    tensors: dict = field(repr=False)
    lora_config: dict | None = field(default=None, repr=False)
    losses: list = field(default_factory=list, repr=False)
    train: dict = field(default_factory=dict)

    # -- from a trained model -------------------------------------------------------------

    @classmethod
    def from_trained(cls, trained, config: FinetuneConfig, mask, base: dict, losses: list, train: dict) -> "Adapter":
        if config.lora:
            from peft import get_peft_model_state_dict

            tensors = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(trained).items()}
            lcfg = trained.peft_config["default"].to_dict()
            lcfg["target_modules"] = sorted(lcfg["target_modules"])
            return cls(config, mask, base, tensors, lcfg, losses, train)
        tensors = {}
        for name, mod in trained.named_modules():
            if parametrize.is_parametrized(mod):
                p = mod.parametrizations["weight"][0]
                tensors[f"{name}.delta"] = p.delta.detach().clone().contiguous()
                tensors[f"{name}.index"] = p.index.clone()
        return cls(config, mask, base, tensors, None, losses, train)

    # -- files ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {"format": ADAPTER_FORMAT, "method": self.config.method, "config": self.config.as_dict(),
                "mask": self.mask.as_dict() if self.mask is not None else None, "base": self.base,
                "lora_config": self.lora_config, "train": self.train, "losses": self.losses}

    def save(self, folder) -> Path:
        """``adapter.safetensors`` (written to a temporary name and renamed), then ``adapter.json``
        holding its checksum, then peft's copy: a kill leaves a folder that :meth:`load` refuses,
        never one it misreads."""
        from peft import LoraConfig
        from safetensors.torch import save_file

        d = make_out_dir(folder)
        tp = d / "adapter.safetensors"
        tmp = tp.with_name(tp.name + ".tmp")
        save_file(self.tensors, str(tmp))
        meta = {**self.to_json(), "tensors_sha256": sha256(tmp)}
        os.replace(tmp, tp)
        atomic_write_text(d / "adapter.json", json.dumps(meta, indent=1, default=str) + "\n")
        if self.lora_config is not None:
            peft_dir = make_out_dir(d / "peft")
            save_file(self.tensors, str(peft_dir / "adapter_model.safetensors"))
            LoraConfig(**{k: v for k, v in self.lora_config.items() if k in LoraConfig.__dataclass_fields__}
                       ).save_pretrained(str(peft_dir))
        return d

    @classmethod
    def load(cls, folder) -> "Adapter":
        """Read an adapter folder, checked whole: every field of ``adapter.json`` (types, the method,
        the mask), the tensors' checksum (required), the tensors' dtypes. One
        :class:`LangNeuronsError` for anything wrong."""
        from safetensors.torch import load_file

        from .methods import METHODS

        d = Path(folder)
        jp, tp = d / "adapter.json", d / "adapter.safetensors"
        if not jp.is_file() or not tp.is_file():
            raise LangNeuronsError(f"no adapter in {str(folder)!r}: expected adapter.json and adapter.safetensors")
        meta = read_json(jp, "adapter")
        bad = lambda what: LangNeuronsError(f"{str(jp)!r}: {what}")  # noqa: E731
        if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise bad(f"format {got!r}, expected {ADAPTER_FORMAT!r}")
        for k, types in (("config", dict), ("base", dict), ("train", dict), ("losses", list),
                         ("mask", (dict, type(None))), ("lora_config", (dict, type(None))), ("tensors_sha256", str)):
            if not isinstance(meta.get(k), types):
                raise bad(f"{k!r} is missing or of the wrong type ({type(meta.get(k)).__name__})")
        if not all(isinstance(x, (int, float)) for x in meta["losses"]):
            raise bad("'losses' must be a list of numbers")
        if not isinstance(meta["base"].get("model"), str):
            raise bad("'base' names no model")
        if meta["tensors_sha256"] != sha256(tp):
            raise LangNeuronsError(f"{str(tp)!r} does not match the checksum in adapter.json: the files are from "
                                   "different runs, or a write was interrupted or damaged")
        cfg = dict(meta["config"])
        if cfg.get("method") not in METHODS:
            raise bad(f"unknown method {cfg.get('method')!r}; allowed: {', '.join(METHODS)}")
        try:
            cfg["matrices"] = tuple(cfg["matrices"]) if cfg.get("matrices") is not None else None
            config = FinetuneConfig(**cfg)
            mask = NeuronMask.from_dict(meta["mask"]) if meta["mask"] else None
        except LangNeuronsError as e:
            raise bad(str(e)) from None
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise bad(f"malformed config or mask ({e})") from None
        if (config.lora) != (meta["lora_config"] is not None):
            raise bad(f"method {config.method!r} and 'lora_config' disagree")
        try:
            tensors = load_file(str(tp))
        except Exception as e:  # safetensors' own errors on a damaged header
            raise LangNeuronsError(f"{str(tp)!r} is not a readable safetensors file ({e})") from None
        if not tensors:
            raise LangNeuronsError(f"{str(tp)!r} holds no tensors")
        for k, t in tensors.items():
            want = (torch.int64,) if k.endswith(".index") else (torch.float32, torch.float16, torch.bfloat16)
            if t.dtype not in want:
                raise LangNeuronsError(f"{str(tp)!r}: tensor {k!r} has dtype {t.dtype}")
        return cls(config, mask, meta["base"], tensors, meta["lora_config"], meta["losses"], meta["train"])


def apply_adapter(hf, adapter: Adapter, merged: bool = True):
    """``hf`` with ``adapter`` on it: ``merged`` — the update added into the weights (returns the
    plain model); otherwise peft LoRA layers (LoRA methods) or a parametrization that adds the
    deltas (``selected-rows``) — returns the model to run."""
    if adapter.lora_config is not None:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        fields = LoraConfig.__dataclass_fields__
        peft_model = get_peft_model(hf, LoraConfig(**{k: v for k, v in adapter.lora_config.items() if k in fields}))
        result = set_peft_model_state_dict(peft_model, adapter.tensors)
        if result.unexpected_keys:
            raise LangNeuronsError(f"the adapter does not fit this model: unexpected {result.unexpected_keys[:3]}")
        peft_model.eval()
        return peft_model.merge_and_unload() if merged else peft_model
    mods = layer_modules(hf)
    by_name = {n: m for proj in mods.values() for n in proj.values() for m in [n]}
    for key, delta in adapter.tensors.items():
        if not key.endswith(".delta"):
            continue
        name = key[: -len(".delta")]
        if name not in by_name:
            raise LangNeuronsError(f"the adapter does not fit this model: it has no module {name!r}")
        lin = hf.get_submodule(name)
        index = adapter.tensors[f"{name}.index"]
        dim = 1 if name.rsplit(".", 1)[-1] in COLUMNS_ARE_NEURONS else 0
        with torch.no_grad():
            if merged:  # only the selected rows/columns are written; every other entry keeps its bits
                if dim == 0:
                    lin.weight[index] = lin.weight[index] + delta.to(lin.weight.dtype)
                else:
                    lin.weight[:, index] = lin.weight[:, index] + delta.to(lin.weight.dtype)
            else:
                p = SelectedDelta(lin.weight, index, dim)
                p.delta.copy_(delta)
                parametrize.register_parametrization(lin, "weight", p)
    return hf.eval()


def merged_folder(adapter: Adapter, out, device: str | None = None) -> Path:
    """A Hugging Face model folder (``config.json``, safetensors, tokenizer) of the base model with
    ``adapter`` merged into its weights."""
    hf, tokenizer, _ = base_model(adapter.base["model"], device)
    merged = apply_adapter(hf, adapter, merged=True)
    d = make_out_dir(out)
    merged.save_pretrained(str(d))
    tokenizer.save_pretrained(str(d))
    # which adapter this folder was merged from: load_finetuned never serves another's merge
    atomic_write_text(d / MERGED_FROM, json.dumps({"adapter_sha256": _adapter_digest(adapter)}) + "\n")
    return d


MERGED_FROM = "tl_langneurons_merged_from.json"


def _adapter_digest(adapter: Adapter) -> str:
    from ..resume import content_hash

    return content_hash(adapter.tensors)


def load_finetuned(folder, merged: bool = True, **load_kwargs):
    """The fine-tuned model as :func:`~.load_model` gives models: from ``folder/merged`` if it
    exists (written by ``finetune --merged``), else merged now into ``folder/merged``. With
    ``merged=False`` the base model is booted with the adapter unmerged (LoRA layers / deltas in
    the forward pass; TransformerLens ≥ 4.3 only)."""
    from ..loading import load_model

    adapter = Adapter.load(folder)
    if merged:
        target = Path(folder) / "merged"
        if not (target / "config.json").is_file():
            merged_folder(adapter, target)
        try:
            source = json.loads((target / MERGED_FROM).read_text(encoding="utf-8")).get("adapter_sha256")
        except (OSError, ValueError, AttributeError):
            source = None
        if source != _adapter_digest(adapter):
            raise LangNeuronsError(f"{str(target)!r} was not merged from the adapter in {str(folder)!r} (a folder of "
                                   "another run?); remove it and load again to merge this adapter")
        return load_model(str(target), **load_kwargs)
    from ..loading import boot_hf

    hf, tokenizer, _ = base_model(adapter.base["model"])
    model = apply_adapter(hf, adapter, merged=False)
    return boot_hf(model, tokenizer, f"{adapter.base['model']}+{Path(folder).name}", **load_kwargs)
