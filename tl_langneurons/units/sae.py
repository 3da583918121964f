"""Sparse-autoencoder features as units: the site ``sae:DIR``.

``DIR`` holds one SAE, or folders that each hold one (a set, e.g. one per layer): the SAEs become
the site's "layers", ordered by the block their hook is in. ``sae:builtin`` is the set shipped
for the built-in model (one TopK SAE per block's residual stream; see its README). One SAE is, as SAELens writes it,

* ``cfg.json``: ``architecture`` (``standard``/``relu``, ``jumprelu`` or ``topk`` with ``k``),
  ``d_in``, ``d_sae``, ``hook_name`` (a TransformerLens hook; at the top level or under
  ``metadata``), ``apply_b_dec_to_input`` (SAELens's default, true, where absent) and
  ``normalize_activations`` (only ``none`` is supported);
* ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae,
  d_in]``, ``b_dec [d_in]`` and, for JumpReLU, ``threshold [d_sae]``.

Gemma Scope's parameter files (``params.npz`` or ``params.safetensors``, the same five tensors,
JumpReLU) are read too; they come without a ``cfg.json``, so write one naming at least the hook,
``{"hook_name": "blocks.12.hook_resid_post"}`` (the architecture is then ``jumprelu`` if a
``threshold`` is present, else ``standard``). ``sae_lens`` itself is not used: its releases
import ``transformer_lens.HookedTransformer``, which TransformerLens 4.3 no longer has.

Reading (the recorder): the encoder runs inside the hook on the hook's output ``x`` (float32):
``f = σ((x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc)`` with σ = ReLU (standard), ``ReLU(h) ·
[h > threshold]`` (JumpReLU) or ReLU of the k largest, the others 0 (TopK). Nothing is stored
per token beyond what the recorder keeps for any unit.

Writing (interventions) keeps the SAE's reconstruction error: with ``f`` the features of ``x``
and ``f'`` after the intervention, the hook's output becomes ``x + (f' − f) W_dec``. An
intervention that changes no feature changes nothing (exactly: the added term is 0).
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import LangNeuronsError, choices
from .base import Part, Site, UnitKind, flat

ARCHITECTURES = ("standard", "jumprelu", "topk")
_ALIASES = {"standard": "standard", "relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}
WEIGHT_FILES = ("sae_weights.safetensors", "params.safetensors", "params.npz")


@dataclass(frozen=True, eq=False)
class SAE:
    """One sparse autoencoder, as read from its folder (float32 on the host; moved per device
    and dtype the first time an activation meets it, and kept there)."""

    path: str
    hook_name: str
    architecture: str
    W_enc: Float[Tensor, "d_in d_sae"]
    b_enc: Float[Tensor, " d_sae"]
    W_dec: Float[Tensor, "d_sae d_in"]
    b_dec: Float[Tensor, " d_in"]
    threshold: Float[Tensor, " d_sae"] | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    sha256: str = ""
    _dev: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def _on(self, device) -> tuple[Tensor, ...]:
        key = str(device)
        if key not in self._dev:
            thr = self.threshold if self.threshold is not None else torch.zeros(0)
            self._dev[key] = tuple(t.to(device) for t in (self.W_enc, self.b_enc, self.W_dec, self.b_dec, thr))
        return self._dev[key]

    def encode(self, x: Tensor) -> Tensor:
        """Features ``[batch, pos, d_sae]`` (float32) of a hook output ``[batch, pos, d_in]``."""
        h = flat(x)
        if h.shape[-1] != self.d_in:
            raise LangNeuronsError(f"the SAE in {self.path!r} reads width {self.d_in}; hook {self.hook_name!r} "
                                   f"has width {h.shape[-1]}")
        W_enc, b_enc, _, b_dec, thr = self._on(h.device)
        h = h.to(torch.float32)
        if self.apply_b_dec_to_input:
            h = h - b_dec
        pre = h @ W_enc + b_enc
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            return torch.relu(pre) * (pre > thr)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, f: Tensor) -> Tensor:
        """The reconstruction ``f W_dec + b_dec`` (float32)."""
        _, _, W_dec, b_dec, _ = self._on(f.device)
        return f.to(torch.float32) @ W_dec + b_dec

    def edit(self, x: Tensor, apply) -> Tensor:
        """``x + (f' − f) W_dec``: ``apply`` turns the features ``f`` of ``x`` into ``f'`` in place."""
        f = self.encode(x)
        changed = f.clone()
        apply(changed)
        delta = changed - f
        if not bool(delta.any()):
            return x
        _, _, W_dec, _, _ = self._on(x.device)
        return x + (delta @ W_dec).to(x.dtype).reshape(x.shape)

    def info(self) -> dict:
        return {"path": self.path, "hook_name": self.hook_name, "architecture": self.architecture,
                "d_in": self.d_in, "d_sae": self.d_sae, "k": self.k, "sha256": self.sha256}


def _read_tensors(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as z:
            return {k: torch.from_numpy(np.asarray(z[k])) for k in z.files}
    from safetensors.torch import load_file

    return load_file(str(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cfg_value(cfg: dict, key: str, default=None):
    if key in cfg:
        return cfg[key]
    meta = cfg.get("metadata")
    return meta.get(key, default) if isinstance(meta, dict) else default


def load_sae(directory: str | Path) -> SAE:
    """One SAE from a folder in SAELens's format (or Gemma Scope's with a ``cfg.json``)."""
    d = Path(directory)
    weights = next((d / n for n in WEIGHT_FILES if (d / n).is_file()), None)
    if weights is None:
        raise LangNeuronsError(f"no SAE in {str(d)!r}: expected one of {choices(WEIGHT_FILES)}")
    cfg_path = d / "cfg.json"
    if not cfg_path.is_file():
        raise LangNeuronsError(f"the SAE in {str(d)!r} has no cfg.json; write one naming its hook, e.g. "
                               '{"hook_name": "blocks.12.hook_resid_post"}')
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LangNeuronsError(f"{str(cfg_path)!r} is not valid JSON: {e}") from None
    t = {k: v.to(torch.float32) for k, v in _read_tensors(weights).items()}
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in t]
    if missing:
        raise LangNeuronsError(f"{str(weights)!r} lacks {missing}; an SAE needs W_enc, b_enc, W_dec, b_dec")
    arch_given = _cfg_value(cfg, "architecture")
    if arch_given is None:
        arch_given = "jumprelu" if "threshold" in t else "standard"
    arch = _ALIASES.get(str(arch_given).lower())
    if arch is None:
        raise LangNeuronsError(f"SAE {str(d)!r}: architecture {arch_given!r} is not supported; allowed: "
                               f"{choices(ARCHITECTURES)} (and 'relu' for standard)")
    hook = _cfg_value(cfg, "hook_name")
    if not isinstance(hook, str) or not hook:
        raise LangNeuronsError(f"SAE {str(d)!r}: cfg.json names no hook_name (top level or under metadata)")
    norm = _cfg_value(cfg, "normalize_activations", "none")
    if norm not in (None, "none"):
        raise LangNeuronsError(f"SAE {str(d)!r}: normalize_activations={norm!r} is not supported (only 'none')")
    W_enc, b_enc, W_dec, b_dec = t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]
    d_in, d_sae = (int(W_enc.shape[0]), int(W_enc.shape[1])) if W_enc.ndim == 2 else (-1, -1)
    if W_enc.ndim != 2 or W_dec.shape != (d_sae, d_in) or b_enc.shape != (d_sae,) or b_dec.shape != (d_in,):
        raise LangNeuronsError(f"SAE {str(d)!r}: shapes W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)}, "
                               f"W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)} do not fit "
                               "W_enc [d_in, d_sae], W_dec [d_sae, d_in]")
    for key, want in (("d_in", d_in), ("d_sae", d_sae)):
        given = _cfg_value(cfg, key)
        if given is not None and int(given) != want:
            raise LangNeuronsError(f"SAE {str(d)!r}: cfg.json says {key}={given}, the weights {want}")
    threshold = t.get("threshold")
    if arch == "jumprelu" and (threshold is None or threshold.shape != (d_sae,)):
        raise LangNeuronsError(f"SAE {str(d)!r}: a JumpReLU SAE needs threshold [d_sae={d_sae}]")
    k = None
    if arch == "topk":
        k = _cfg_value(cfg, "k")
        if not isinstance(k, int) or not 1 <= k <= d_sae:
            raise LangNeuronsError(f"SAE {str(d)!r}: a TopK SAE needs k in [1, {d_sae}] in cfg.json, got {k!r}")
    return SAE(str(d), hook, arch, W_enc, b_enc, W_dec, b_dec, threshold if arch == "jumprelu" else None, k,
               bool(_cfg_value(cfg, "apply_b_dec_to_input", True)), _sha256(weights))


def _is_sae_dir(d: Path) -> bool:
    return any((d / n).is_file() for n in WEIGHT_FILES)


def _layer_of(hook: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else -1


_CACHE: dict = {}


def builtin_sae_path() -> Path:
    """The SAEs shipped for the built-in model (one per block's residual stream; ``sae:builtin``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "saes" / "builtin-resid"


def load_saes(directory: str | Path) -> list[SAE]:
    """The SAE in ``directory``, or every SAE in its subfolders ordered by block then hook name.
    Cached per folder and file modification times (interventions resolve their site each time)."""
    d = builtin_sae_path() if str(directory) == "builtin" else Path(directory).expanduser()
    if not d.is_dir():
        raise LangNeuronsError(f"SAE folder {str(directory)!r} does not exist")
    dirs = [d] if _is_sae_dir(d) else sorted(p.parent for n in WEIGHT_FILES for p in d.rglob(n))
    if not dirs:
        raise LangNeuronsError(f"no SAE in {str(directory)!r} or its subfolders: expected {choices(WEIGHT_FILES)}")
    stamp = tuple((str(p), *(f.stat().st_mtime_ns for f in sorted(p.iterdir()) if f.is_file())) for p in dirs)
    if _CACHE.get(str(d), (None,))[0] == stamp:
        return _CACHE[str(d)][1]
    saes = sorted((load_sae(p) for p in dict.fromkeys(dirs)), key=lambda s: (_layer_of(s.hook_name), s.hook_name))
    hooks = [s.hook_name for s in saes]
    if len(set(hooks)) != len(hooks):
        raise LangNeuronsError(f"the SAEs in {str(directory)!r} read the same hook twice: {hooks}")
    widths = {s.d_sae for s in saes}
    if len(widths) != 1:
        raise LangNeuronsError(f"the SAEs in {str(directory)!r} have different widths {sorted(widths)}; one "
                               "site holds SAEs of one width")
    _CACHE[str(d)] = (stamp, saes)
    return saes


def resolve(model: Any, arg: str | None) -> Site:
    saes = load_saes(arg)
    parts = tuple((Part(s.hook_name, s.d_sae, 0, f"sae {s.hook_name}", read_fn=s.encode, edit_fn=s.edit),)
                  for s in saes)
    gated = "blocks.0.mlp.hook_pre_linear" in model.hook_dict
    return Site(f"sae:{arg}", "sae", gated, len(saes), saes[0].d_sae, parts, info={"saes": [s.info() for s in saes]})


KIND = UnitKind("sae", resolve, "features of the sparse autoencoder(s) in folder ARG (SAELens format)",
                takes_arg=True)
