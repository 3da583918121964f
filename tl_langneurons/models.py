"""Load a model as a TransformerLens model, and say where its "neurons" are read: the site.

A model is a TransformerLens ``TransformerBridge`` (TL ≥ 4.3, raw weights — compatibility mode
is never turned on, it rewrites weights and doubles memory), or with TL 3.x installed a
``HookedTransformer`` built offline from the same weights, raw (:mod:`.hooked`): it has the same
hook names and the same ``model.hooks(...)`` context manager.

Sites (METHODS §1) are the unit registry's (:mod:`.units`): MLP neurons ``act``/``pre``/``post``
(:mod:`.units.mlp`), every linear output ``q``/``k``/``v``/``o``/``up``/``down``/``linear``
(:mod:`.units.linear`) and SAE features ``sae:DIR`` (:mod:`.units.sae`).
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

import torch

from . import compat
from .errors import LangNeuronsError, choices
from .placement import check_map_covers, check_placement, execution_device, offloaded_values, tied_placeholders
from .sources import BUILTIN, local_folder

def load_model(
    model: str = "builtin",
    device: str | None = None,
    dtype: str | torch.dtype | None = "float32",
    site: str = "act",
    *,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
) -> Any:
    """Load ``model`` as a TransformerLens ``TransformerBridge`` (raw mode), or, where
    TransformerLens 3.x is installed (no bridge), as a ``HookedTransformer`` built from the same
    Hugging Face weights, raw (:mod:`.hooked`; Llama and Gemma 3 only).

    Args:
        model: a built-in model (``"builtin"``, ``"gemma-3-270m"``: see :mod:`.sources`), a local
            Hugging Face model directory, a ``.gguf`` file (dequantized once into the cache), or a
            Hugging Face hub id (needs a network, or a warm cache).
        device: torch device for the whole model (default ``cpu``). Excludes ``device_map``.
        dtype: weights and compute dtype (``float32``, ``bfloat16``, ``float16``).
        site: the neuron site to check at load (``act``, ``pre``, ``post``): its hooks must exist,
            fire, and have the MLP's width (read from its down projection, :func:`mlp_width`).
        device_map: dispatch one copy of a model too large for one device over several, through
            Hugging Face/accelerate: ``"auto"`` (or ``"balanced"``, ``"balanced_low_0"``,
            ``"sequential"``) or a ``{module name: GPU index | device | "disk"}`` dict. The bridge
            then reads ``hf_device_map``: ``model.cfg.device`` is the device of the input embedding
            (where tokens go), each layer computes where the map put it.
        max_memory: with ``device_map``, the most each device may hold, e.g. ``{0: "70GiB", 1: "70GiB"}``.
        offload_folder: with ``device_map``, where weights mapped to ``"disk"`` are written
            (not needed where they can be read from the model's own safetensors files).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _dtype(dtype)
    placed = check_placement(device, device_map, max_memory, offload_folder)
    # TL 4.3's boot_transformers refuses device_map together with hf_model=: the map goes to
    # from_pretrained, and the bridge reads the realized hf_device_map (and does not move the model)
    hf_kwargs = {k: v for k, v in placed.items() if k != "device"}
    if hf_kwargs and backend() != "bridge":
        raise LangNeuronsError(f"device_map={device_map!r} needs TransformerLens >= 4.3 (TransformerBridge); a TL 3.x "
                               "HookedTransformer is loaded onto one device only")
    kind, where = local_folder(model)
    if isinstance(placed.get("device_map"), dict):
        check_map_covers(placed["device_map"], where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        hf_model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, **hf_kwargs)
    except OSError as e:
        if kind == "hub":
            raise LangNeuronsError(
                f"could not load model {model!r} from the Hugging Face hub ({str(e).splitlines()[0]}); "
                f"expected {choices(BUILTIN)}, a reachable hub id, a .gguf file or a local model directory"
            ) from None
        raise LangNeuronsError(f"could not load model directory {model!r}: {str(e).splitlines()[0]}") from None
    except (ValueError, KeyError) as e:
        if not hf_kwargs:
            raise
        # a map naming modules the model lacks, or leaving some out, is the user's to fix
        raise LangNeuronsError(f"could not dispatch {model!r} with device_map={device_map!r}: "
                               f"{str(e).splitlines()[0]}") from None
    hf_model.eval()
    if backend() == "bridge":
        tl_model = _boot_bridge(model, where, hf_model, tokenizer, torch_dtype, placed, hf_kwargs, device_map)
    else:  # TransformerLens 3.x
        from .hooked import build

        tl_model = build(hf_model, tokenizer, model, placed.get("device") or "cpu", torch_dtype)
        del hf_model
    tl_model.eval()
    # Remember what the user asked for: the fingerprint and the artifacts name the model by it.
    tl_model._tl_langneurons_name = model
    check_site(tl_model, site)
    return tl_model


def _boot_bridge(model, where, hf_model, tokenizer, torch_dtype, placed: dict, hf_kwargs: dict, device_map):
    from transformer_lens.model_bridge import TransformerBridge  # heavy import

    compat.install()  # KV-cached generation with transformers >= 5.24 (does nothing elsewhere)
    try:
        bridge = TransformerBridge.boot_transformers(
            where, hf_model=hf_model, tokenizer=tokenizer, device=placed.get("device"), dtype=torch_dtype
        )
    except ValueError as e:
        if not hf_kwargs:
            raise
        # e.g. an "auto" map that came out mixing GPUs with CPU/disk offload, which TL refuses
        raise LangNeuronsError(f"TransformerLens refused {model!r} as dispatched by device_map={device_map!r}: "
                               f"{str(e).splitlines()[0]}") from None
    if hf_kwargs and torch.device(bridge.cfg.device).type == "meta":
        # TL takes the input device from the embedding's parameter, a meta placeholder when the
        # embedding is offloaded; tokens go where accelerate computes it
        where_embed = execution_device(hf_model.get_input_embeddings())
        bridge.cfg.device = str(where_embed if where_embed is not None else "cpu")
    return bridge


def boot_hf(hf_model: Any, tokenizer: Any, name: str, site: str = "act") -> Any:
    """A TransformerBridge on a Hugging Face model already in memory (e.g. one with an unmerged
    peft adapter or parametrized weights in its modules: the bridge wraps them and their forward
    runs). ``name`` is what artifacts made on it record. TransformerLens >= 4.3 only."""
    if backend() != "bridge":
        raise LangNeuronsError("an in-memory model (an unmerged adapter) needs TransformerLens >= 4.3; with TL 3.x "
                               "use the merged model folder")
    inner = getattr(getattr(hf_model, "base_model", None), "model", None)
    hf = inner if inner is not None and hasattr(hf_model, "peft_config") else hf_model
    dtype = next(hf.parameters()).dtype
    bridge = _boot_bridge(name, hf.name_or_path or name, hf.eval(), tokenizer, dtype, {"device": None}, {}, None)
    bridge.eval()
    bridge._tl_langneurons_name = name
    check_site(bridge, site)
    return bridge


def backend() -> str:
    """``"hooked"`` where the installed TransformerLens still has ``HookedTransformer`` (3.x), else
    ``"bridge"`` (4.x). TL 3.9 ships an early ``TransformerBridge`` too; it is not used (untested)."""
    import importlib.util

    return "hooked" if importlib.util.find_spec("transformer_lens.HookedTransformer") is not None else "bridge"


def is_hooked(model: Any) -> bool:
    """Is ``model`` a ``HookedTransformer`` (no wrapped Hugging Face model), not a bridge?"""
    return getattr(model, "original_model", None) is None


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in allowed:
        raise LangNeuronsError(f"unknown dtype {dtype!r}; allowed: {choices(allowed)}")
    return allowed[dtype]


# ---------------------------------------------------------------------------------------------
# Sites: the unit registry (:mod:`.units`) says where units are read and written; these names stay
# importable from here.

from .units import SITES, Site, check_site, resolve_site  # noqa: E402,F401
from .units.mlp import activation_fn, is_gated, mlp_width  # noqa: E402,F401


# ---------------------------------------------------------------------------------------------
# A forward pass that stops at the last hook a reader needs


class StopForward(Exception):
    """Raised by the last hook a reader needs: nothing after it (e.g. the unembedding) is computed."""


def forward_until(model: Any, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
    """``model(tokens)`` with the hooks already added, ended early where a hook raises
    :class:`StopForward`."""
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.to(tokens.device)}
    try:
        model(tokens, return_type=None, **kwargs)
    except StopForward:
        pass


# ---------------------------------------------------------------------------------------------
# Identity of a model, recorded in every artifact so that artifacts from different models never mix.


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
