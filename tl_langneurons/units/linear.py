"""Every linear output as a unit (Kojima et al. 2024): the sites ``q``, ``k``, ``v``, ``o``,
``up``, ``down`` and ``linear`` (all of them, read in one forward pass).

=========  ======================================  ===================================================
site       reads (TransformerBridge hook)           Hugging Face module
=========  ======================================  ===================================================
``q``      ``attn.q.hook_out`` (heads flattened)    ``q_proj`` (the q third of GPT-2's ``c_attn``,
           ``k``, ``v`` alike                       of Phi-3's ``qkv_proj``)
``o``      ``attn.o.hook_out``                      ``o_proj`` (GPT-2: ``attn.c_proj``)
``up``     ``mlp.in.hook_out``                      ``up_proj`` (Phi-3: the up half of ``gate_up_proj``;
                                                    a non-gated MLP's first projection ``fc1``/``c_fc``)
``down``   ``mlp.out.hook_out``                     ``down_proj`` (``fc2``/``c_proj``)
=========  ======================================  ===================================================

The gate projection's output is the site ``pre`` (``mlp.hook_pre``). ``linear`` is Kojima's full
set: per layer ``q, k, v, o, gate, up, down`` side by side (no gate on a non-gated MLP, whose
``up`` is its ``pre``); ``Site.layout()`` says where each lies. Fused projections are read
through the bridge's split hooks, so a unit is one output of one projection either way. Each
part's width is its projection's output width, read from the module. A unit is written where it
is read (its projection's output), so ``set`` to the median of sentence means is Kojima's
"forcing".

These hooks are TransformerBridge's (TransformerLens ≥ 4.3); a TL 3.x HookedTransformer has no
per-projection hooks and is refused (by name of the missing hook). A mixture-of-experts MLP is
refused: its ``gate`` is the router, and its up/down projections are per expert.
"""

from typing import Any

from ..errors import LangNeuronsError
from .base import Part, Site, UnitKind
from .mlp import is_gated, out_features, submodule

# (part name, owner ("attn"/"mlp"), the bridge's submodule) in forward order
_PARTS = {"q": ("attn", "q"), "k": ("attn", "k"), "v": ("attn", "v"), "o": ("attn", "o"),
          "gate": ("mlp", "gate"), "up": ("mlp", "in"), "down": ("mlp", "out")}


def _width(model: Any, layer: int, part: str) -> int:
    owner, sub = _PARTS[part]
    module = submodule(getattr(model.blocks[layer], owner), sub)
    hook = f"blocks.{layer}.{owner}.{sub}.hook_out"
    if module is None or hook not in model.hook_dict:
        raise LangNeuronsError(f"site {part!r}: this model has no hook {hook!r} (linear units need "
                               "TransformerLens >= 4.3's TransformerBridge)")
    w = out_features(module)
    if w is None:
        raise LangNeuronsError(f"site {part!r}: cannot read the output width of {hook.rsplit('.', 1)[0]!r}")
    return w


def _check_dense(model: Any, site: str) -> None:
    mlp = model.blocks[0].mlp
    inner = getattr(mlp, "original_component", None)
    if any(submodule(m, "experts") is not None for m in (mlp, inner) if m is not None):
        raise LangNeuronsError(f"site {site!r}: this model's MLP is a mixture of experts; its linear units "
                               "(per-expert projections, a router) are not supported")


def _resolve(names: tuple[str, ...], site: str):
    def resolve(model: Any, arg: str | None) -> Site:
        _check_dense(model, site)
        gated = is_gated(model)
        parts = tuple(n for n in names if n != "gate" or gated)
        n_layers = int(model.cfg.n_layers)
        layers, widths = [], set()
        for l in range(n_layers):
            offset, row = 0, []
            for name in parts:
                owner, sub = _PARTS[name]
                w = _width(model, l, name)
                row.append(Part(f"blocks.{l}.{owner}.{sub}.hook_out", w, offset, name))
                offset += w
            layers.append(tuple(row))
            widths.add(offset)
        if len(widths) != 1:
            raise LangNeuronsError(f"site {site!r}: layers have different numbers of units {sorted(widths)}; "
                                   "one width per site is supported")
        return Site(site, site, gated, n_layers, widths.pop(), tuple(layers))
    return resolve


_HELP = {"q": "outputs of the attention's query projection", "k": "outputs of the key projection",
         "v": "outputs of the value projection", "o": "outputs of the attention's output projection",
         "up": "outputs of the MLP's up projection (non-gated: its first projection)",
         "down": "outputs of the MLP's down projection"}

KINDS = (
    *(UnitKind(n, _resolve((n,), n), h) for n, h in _HELP.items()),
    UnitKind("linear", _resolve(tuple(_PARTS), "linear"),
             "every linear output, q k v o gate up down side by side per layer (Kojima et al. 2024)"),
)
