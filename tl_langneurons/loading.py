"""Load a model as a TransformerLens model (:func:`load_model`), or wrap one already in memory
(:func:`boot_hf`); which TransformerLens model it becomes is the back end's (:mod:`.backends`).

A model is a TransformerLens ``TransformerBridge`` (TL ≥ 4.3, raw weights — compatibility mode
is never turned on, it rewrites weights and doubles memory), or with TL 3.x installed a
``HookedTransformer`` built offline from the same weights, raw (:mod:`.hooked`): it has the same
hook names and the same ``model.hooks(...)`` context manager.
"""

import pickle
from typing import Any

import torch

from .backends import BRIDGE, installed_backend
from .errors import LangNeuronsError, choices
from .models import check_site
from .placement import check_map_covers, check_placement
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
        site: the unit site to check at load (``act``, ``pre``, ``post``, a linear output, ``linear``,
            ``sae:DIR``: :mod:`.units`): its hooks must exist, fire, and have the width read from
            the model's weights (for MLP neurons its down projection's, :func:`mlp_width`).
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
    be = installed_backend()
    if hf_kwargs and not be.dispatches:
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
    except pickle.UnpicklingError:  # torch's safe loader refusing a pickled checkpoint: as it should
        raise LangNeuronsError(f"model {model!r}: its pickled weights (pytorch_model.bin) hold objects that torch's "
                               "safe loader (weights_only) refuses; nothing is unpickled unsafely here: convert the "
                               "weights to safetensors") from None
    except (ValueError, KeyError) as e:
        if not hf_kwargs:
            raise
        # a map naming modules the model lacks, or leaving some out, is the user's to fix
        raise LangNeuronsError(f"could not dispatch {model!r} with device_map={device_map!r}: "
                               f"{str(e).splitlines()[0]}") from None
    hf_model.eval()
    tl_model = be.build(model, where, hf_model, tokenizer, torch_dtype, placed, hf_kwargs, device_map)
    del hf_model  # a back end that copied the weights (TL 3.x) frees the Hugging Face model here
    tl_model.eval()
    # Remember what the user asked for: the fingerprint and the artifacts name the model by it.
    tl_model._tl_langneurons_name = model
    check_site(tl_model, site)
    return tl_model

def boot_hf(hf_model: Any, tokenizer: Any, name: str, site: str = "act") -> Any:
    """A TransformerBridge on a Hugging Face model already in memory (e.g. one with an unmerged
    peft adapter or parametrized weights in its modules: the bridge wraps them and their forward
    runs). ``name`` is what artifacts made on it record. TransformerLens >= 4.3 only."""
    if not installed_backend().wraps_in_memory:
        raise LangNeuronsError("an in-memory model (an unmerged adapter) needs TransformerLens >= 4.3; with TL 3.x "
                               "use the merged model folder")
    inner = getattr(getattr(hf_model, "base_model", None), "model", None)
    hf = inner if inner is not None and hasattr(hf_model, "peft_config") else hf_model
    dtype = next(hf.parameters()).dtype
    bridge = BRIDGE.build(name, hf.name_or_path or name, hf.eval(), tokenizer, dtype, {"device": None}, {}, None)
    bridge.eval()
    bridge._tl_langneurons_name = name
    check_site(bridge, site)
    return bridge

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
