"""Where a model lives: on one device, or as one copy dispatched over several devices by Hugging
Face/accelerate (``device_map``), for models larger than one device.

A dispatched model's layers compute on different devices and accelerate moves the activations
between them. This module checks the placement arguments once, before anything is loaded, and
answers the two questions the rest of the package asks of a dispatched model: which devices does
it compute on (:func:`compute_devices`), and where are the real values of a parameter that
accelerate offloaded to the CPU or disk, whose module holds only a ``meta`` placeholder
(:func:`offloaded_values`). Where each layer's activations live is read from the activations
themselves (:func:`~.models.check_site` records it).
"""

import re
from collections.abc import Callable
from typing import Any

import torch

from .errors import LangNeuronsError, choices

# accelerate's strategies for computing a device_map from the free memory of each device
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)


def check_placement(device, device_map, max_memory, offload_folder) -> dict:
    """The keyword arguments for :func:`~.models.load_model`'s loader: ``{"device": d}`` for one
    device (``cpu`` if none is given), or ``{"device_map": ..., "max_memory": ..., "offload_folder": ...}``
    for a dispatched model. ``device`` and ``device_map`` exclude each other: a dispatched model's
    devices are its map's, and moving it onto one device would undo the dispatch."""
    if device_map is None:
        for name, v in (("max_memory", max_memory), ("offload_folder", offload_folder)):
            if v is not None:
                raise LangNeuronsError(f"{name}={v!r} needs a device_map (it budgets or holds the dispatched "
                                       "weights); give device_map='auto' or a dict, or leave it out")
        if device is None:
            return {"device": "cpu"}
        if not isinstance(device, (str, torch.device)):
            raise LangNeuronsError(f"device must be a device name like 'cpu' or 'cuda:0', got {device!r}")
        _torch_device("device", device)
        return {"device": device}
    if device is not None:
        raise LangNeuronsError(f"device={device!r} and device_map={device_map!r} exclude each other: a dispatched "
                               "model computes on its device_map's devices; give one of them")
    out = {"device_map": _device_map(device_map)}
    if max_memory is not None:
        out["max_memory"] = _max_memory(max_memory)
    if offload_folder is not None:
        if not isinstance(offload_folder, str) or not offload_folder:
            raise LangNeuronsError(f"offload_folder must be a directory path, got {offload_folder!r}")
        out["offload_folder"] = offload_folder
    return out


def _torch_device(name: str, v) -> torch.device:
    try:
        d = torch.device(v)
    except (RuntimeError, TypeError):
        raise LangNeuronsError(f"{name}: {v!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if d.type == "meta":
        raise LangNeuronsError(f"{name}: 'meta' holds no weights to compute with; use a real device or 'disk'")
    return d


def _device_map(dm) -> str | dict:
    if isinstance(dm, str):
        if dm not in STRATEGIES:
            raise LangNeuronsError(f"unknown device_map {dm!r}; allowed: {choices(STRATEGIES)} or a "
                                   "{module name: device} dict")
        return dm
    if not isinstance(dm, dict) or not dm:
        raise LangNeuronsError(f"device_map must be one of {choices(STRATEGIES)} or a non-empty "
                               f"{{module name: device}} dict, got {dm!r}")
    out, gpu, offload = {}, False, False
    for k, v in dm.items():
        if not isinstance(k, str):
            raise LangNeuronsError(f"device_map keys are module names (strings, '' for the whole model), got {k!r}")
        if type(v) is int and v >= 0:  # accelerate's spelling of cuda:v (bool is refused: never a device)
            gpu = True
        elif v == "disk":
            offload = True
        elif isinstance(v, str):
            d = _torch_device(f"device_map[{k!r}]", v)
            gpu |= d.type != "cpu"
            offload |= d.type == "cpu"
        else:
            raise LangNeuronsError(f"device_map[{k!r}] must be a GPU index ≥ 0, a device name or 'disk', got {v!r}")
        out[k] = v
    if gpu and offload:
        # TransformerLens 4.3 refuses such maps after loading (its offload path is verified on
        # CPU-only hosts); refused here before the weights are read
        raise LangNeuronsError(f"device_map {dm!r} mixes GPU targets with 'cpu'/'disk' offload, which "
                               "TransformerLens 4.3 refuses; put every module on a GPU, or every module on cpu/disk")
    return out


def _max_memory(mm) -> dict:
    if not isinstance(mm, dict) or not mm:
        raise LangNeuronsError(f"max_memory must be a non-empty {{device: size}} dict like {{0: '70GiB', 1: '70GiB'}}, "
                               f"got {mm!r}")
    out = {}
    for k, v in mm.items():
        if not ((type(k) is int and k >= 0) or k in ("cpu", "disk", "mps")
                or (isinstance(k, str) and re.fullmatch(r"cuda:\d+", k))):
            raise LangNeuronsError(f"max_memory key {k!r} is not a device; allowed: a GPU index ≥ 0, 'cpu', "
                                   "'disk', 'mps' or 'cuda:N'")
        if not ((type(v) is int and v > 0) or (isinstance(v, str) and _SIZE.match(v))):
            raise LangNeuronsError(f"max_memory[{k!r}] must be a positive number of bytes or a size like '70GiB', "
                                   f"got {v!r}")
        # accelerate names GPUs by index only
        out[int(k[5:]) if isinstance(k, str) and k.startswith("cuda:") else k] = v
    return out


def check_map_covers(device_map: dict, where: str) -> None:
    """Refuse a ``{module: device}`` map that names a module the model at ``where`` lacks (accelerate
    only warns: a typo would silently leave a module wherever it lands) or that places no device
    for some parameter (transformers then loads it on the CPU, outside the map). Read from the
    model's skeleton on the meta device: no weight is read, however large the model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(where))
    modules = {name for name, _ in skeleton.named_modules()}
    unknown = [k for k in device_map if k not in modules]
    if unknown:
        raise LangNeuronsError(f"device_map names {unknown[0]!r}, which is not a module of this model; its top "
                               f"modules are {choices(n for n, _ in skeleton.named_children())}")
    if "" in device_map:
        return
    for name, _ in skeleton.named_parameters():
        if not any(name == k or name.startswith(k + ".") for k in device_map):
            raise LangNeuronsError(f"device_map places no device for parameter {name!r}; map a module that "
                                   "holds it (or '' for the whole model)")


def _hooks(module: Any) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])  # a SequentialHook holds several


def execution_device(module: Any) -> torch.device | None:
    """The device accelerate runs ``module`` on (its hook's ``execution_device``), if it set one."""
    for m in (module, getattr(module, "_original_component", None)):
        for hook in _hooks(m) if m is not None else []:
            dev = getattr(hook, "execution_device", None)
            if dev is not None:
                return torch.device(f"cuda:{dev}" if type(dev) is int else dev)
    return None


def compute_devices(model: Any) -> list[torch.device]:
    """Every device ``model`` computes on: those of its loaded parameters and its input device
    (offloaded parameters are ``meta`` placeholders, computed with on their hook's execution
    device, which is the input device in the CPU/disk-offload maps TransformerLens accepts)."""
    devs = {torch.device(model.cfg.device)}
    devs.update(p.device for p in model.parameters() if p.device.type != "meta")
    return sorted(devs, key=str)


def offloaded_values(model: Any) -> dict[int, Callable[[], torch.Tensor]]:
    """For each parameter accelerate offloaded (a ``meta`` placeholder in its module), keyed by
    ``id(parameter)``: a function that reads its real values from the offload (CPU memory or
    the files on disk), cast to the placeholder's dtype exactly as accelerate does before each
    forward. Read one tensor at a time, so a model offloaded to disk is never all in memory."""
    out: dict[int, Callable[[], torch.Tensor]] = {}
    for module in model.modules():
        for hook in _hooks(module):
            weights = getattr(hook, "weights_map", None)
            if not getattr(hook, "offload", False) or weights is None:
                continue
            for name, p in module.named_parameters(recurse=bool(getattr(hook, "place_submodules", False))):
                if p.device.type == "meta" and name in weights:
                    out[id(p)] = (lambda w=weights, n=name, dt=p.dtype: w[n].to(dt))
    return out


def tied_placeholders(model: Any, params: list[tuple[str, torch.Tensor]]) -> set[str]:
    """The names of the ``meta`` parameters among ``params`` that the Hugging Face model ties to
    another parameter also in ``params`` (an output embedding tied to the input embedding).

    A tied weight is one tensor, listed once by ``named_parameters``; accelerate's offload hooks
    re-create each module's placeholder after every forward pass, which splits a tie into two
    placeholders of the same offloaded values. Hashing both would tell a dispatched model from the
    same model loaded whole, so the tied copy is left out."""
    from .backends import backend_of  # the back ends import this module

    hf = backend_of(model).hf_model(model)
    tied = getattr(hf, "all_tied_weights_keys", None) or getattr(hf, "_tied_weights_keys", None)
    if not isinstance(tied, dict):
        return set()
    hf_name = {n: n.replace("._original_component", "") for n, _ in params}  # the bridge wraps each HF module
    present = set(hf_name.values())
    return {n for n, p in params if p.device.type == "meta"
            and tied.get(hf_name[n]) in present and tied[hf_name[n]] != hf_name[n]}
