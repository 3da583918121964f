"""The identity of a model, recorded in every artifact so that artifacts from different models never
mix: its name, a hash of every weight (:func:`weights_hash`), and the :func:`fingerprint` an
artifact stores; :func:`compatible` is the one place artifacts from different models are refused.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

import torch

from .errors import LangNeuronsError
from .models import is_gated, mlp_width
from .placement import offloaded_values, tied_placeholders


def model_name(model: Any) -> str:
    name = getattr(model, "_tl_langneurons_name", None)
    return str(name if name is not None else getattr(model.cfg, "model_name", "unknown"))


def _weights_key(model: Any) -> tuple:
    """What changes whenever a weight may have changed: every parameter's name, storage, shape,
    dtype and version counter (bumped by every in-place write: an optimizer step, ``copy_``, a
    LoRA merge)."""
    return tuple((name, p.data_ptr(), tuple(p.shape), str(p.dtype), p._version)
                 for name, p in model.named_parameters())


def _tensor_digest(name: str, p: torch.Tensor) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(name.encode())
    h.update(f"{tuple(p.shape)} {p.dtype}".encode())
    flat = p.detach().reshape(-1)
    if flat.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16: hash the raw bits
        flat = flat.view(torch.int16)
    step = max(1, (1 << 26) // max(flat.element_size(), 1))  # 64 MiB at a time from the device
    for i in range(0, flat.numel(), step):
        h.update(flat[i:i + step].to("cpu").contiguous().numpy())  # the buffer itself, no copy
    return h.digest()


def weights_hash(model: Any) -> str:
    """A BLAKE2b hash of every weight: each parameter's name, shape, dtype and every byte of it.

    Every element counts, so a fine-tune that changed a single row hashes differently from its
    base model. Computed once per model object and cached; the cache is dropped as soon as any
    parameter is written in place, replaced, added or removed (:func:`_weights_key`). Each tensor
    gets its own digest (several at once, in threads), read from host memory in chunks of 64 MiB, so
    a model on a GPU is copied over piece by piece and never twice in memory; the hash is that of
    the digests in name order. ``tl-langneurons bench hash`` measures the speed.

    A parameter accelerate offloaded (``device_map`` with ``cpu``/``disk`` offload) is a ``meta``
    placeholder in its module; its real values are read from the offload, one tensor at a time,
    so a dispatched model hashes as the same model loaded whole (a tie the offload split into two
    placeholders counts once, as ``named_parameters`` lists it). A ``meta`` parameter with no
    offloaded values is refused: a placeholder has no bytes to hash.
    """
    key = _weights_key(model)
    cached = getattr(model, "_tl_langneurons_hash", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    params = sorted(model.named_parameters(), key=lambda kv: kv[0])
    if any(p.device.type == "meta" for _, p in params):
        offload = offloaded_values(model)
        missing = [name for name, p in params if p.device.type == "meta" and id(p) not in offload]
        if missing:
            raise LangNeuronsError(f"cannot hash the weights: parameter {missing[0]!r} (and {len(missing) - 1} more) is "
                                   "on the meta device with no offloaded values behind it; load the model with its "
                                   "weights (device_map may offload to 'cpu' or 'disk', not 'meta')")
        drop = tied_placeholders(model, params)
        params = [(name, _Offloaded(offload[id(p)], p)) if p.device.type == "meta" else (name, p)
                  for name, p in params if name not in drop]
    # one BLAKE2b per tensor, in threads (hashlib releases the GIL on large buffers), then a hash
    # of those digests in name order: every byte counts, on every core
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda kv: _tensor_digest(kv[0], kv[1].load() if isinstance(kv[1], _Offloaded)
                                                          else kv[1]), params))
    h = hashlib.blake2b(digest_size=16)
    for d in digests:
        h.update(d)
    digest = h.hexdigest()
    try:
        object.__setattr__(model, "_tl_langneurons_hash", (key, digest))
    except (AttributeError, TypeError):  # an object that takes no attributes: no cache
        pass
    return digest


class _Offloaded:
    """An offloaded parameter's values, read when its digest is taken (then dropped)."""

    def __init__(self, read: Callable[[], torch.Tensor], placeholder: torch.Tensor):
        self.read, self.placeholder = read, placeholder

    def load(self) -> torch.Tensor:
        value = self.read()
        if tuple(value.shape) != tuple(self.placeholder.shape):
            raise LangNeuronsError(f"an offloaded weight has shape {tuple(value.shape)}, its placeholder "
                                   f"{tuple(self.placeholder.shape)}; the offload does not belong to this model")
        return value


def identity(model: Any) -> dict:
    """The part of a fingerprint that tells models apart: name and weights hash."""
    return {"name": model_name(model), "weights_hash": weights_hash(model)}


def compatible(a: Any, b: Any, what_a: str, what_b: str) -> None:
    """Raise unless ``a`` and ``b`` come from the same weights: each is a model or the fingerprint
    an artifact recorded (``{"name", "weights_hash", ...}``). The one place artifacts from
    different models are refused: by weights hash, or by name where either side records no hash
    (and not at all where neither is recorded on both sides)."""
    fa = a if isinstance(a, dict) else identity(a)
    fb = b if isinstance(b, dict) else identity(b)
    ha, hb = fa.get("weights_hash"), fb.get("weights_hash")
    if ha and hb:
        if ha != hb:
            raise LangNeuronsError(f"{what_a} and {what_b} come from different models: {fa.get('name')!r} "
                                   f"(weights {ha!r}) and {fb.get('name')!r} (weights {hb!r})")
    elif fa.get("name") and fb.get("name") and fa["name"] != fb["name"]:  # no hash: the names must agree
        raise LangNeuronsError(f"{what_a} and {what_b} come from different models: {fa['name']!r} and {fb['name']!r}")


def fingerprint(model: Any) -> dict:
    """What identifies a model: architecture, depth, width and a hash of the weights."""
    arch = getattr(model.cfg, "architecture", None) or getattr(model.cfg, "original_architecture", None)
    return {
        "name": model_name(model),
        "architecture": str(arch),
        "n_layers": int(model.cfg.n_layers),
        "d_mlp": mlp_width(model),
        "gated": is_gated(model),
        "weights_hash": weights_hash(model),
    }
