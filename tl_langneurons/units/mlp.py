"""MLP neurons: the sites ``act``, ``pre`` and ``post`` (methods page: [sites](methods.md#sites)).

=========  ===============================================  =========================================
site       gated MLP (Llama, Mistral, Qwen, Gemma)          non-gated MLP (GPT-2, BLOOM, OPT, XGLM)
=========  ===============================================  =========================================
``act``    ``φ(gate x)``: φ applied to ``mlp.hook_pre``      ``φ(W_1 x)`` = ``mlp.hook_post``
``pre``    ``gate x`` = ``mlp.hook_pre``                     ``W_1 x`` = ``mlp.hook_pre``
``post``   ``φ(gate x) ⊙ up x`` = ``mlp.hook_post``          ``mlp.hook_post``
=========  ===============================================  =========================================

Whether an MLP is gated is read from the model itself (does ``hook_pre_linear`` exist), φ is the
activation module the model really uses, and the width is the input width of the MLP's down
projection (:func:`mlp_width`); nothing is inferred from the model's name or a configuration
default.

Writing: values are written where they were measured. ``pre`` on ``mlp.hook_pre``; ``post``, and
``act`` of a non-gated MLP, on ``mlp.hook_post``. ``act`` of a gated MLP is ``φ(gate)``, which has
no hook of its own: ``zero``/``scale`` of it equal ``zero``/``scale`` of ``hook_post = φ(gate) ⊙
up``, and ``set``/``add``/``patch`` to ``v`` mean ``post := v · up``, with ``up`` read from
``mlp.hook_pre_linear`` in the same forward pass.
"""

from collections.abc import Callable
from typing import Any

import torch

from ..errors import LangNeuronsError
from .base import Part, Site, UnitKind


def is_gated(model: Any) -> bool:
    """A gated MLP exposes ``hook_pre_linear`` (the ``up x`` branch); read from the model, not its name."""
    return "blocks.0.mlp.hook_pre_linear" in model.hook_dict


def activation_fn(model: Any, layer: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation φ that the model's MLP really applies (its own module, not a name lookup)."""
    mlp = model.blocks[layer].mlp
    for owner in (mlp, getattr(mlp, "original_component", None)):
        fn = getattr(owner, "act_fn", None) if owner is not None else None
        if callable(fn):
            return fn
    name = getattr(model.cfg, "act_fn", None)
    if name:
        from transformers.activations import ACT2FN

        if name in ACT2FN:
            return ACT2FN[name]
    raise LangNeuronsError("cannot find the MLP activation function of this model; use site 'pre' or 'post'")


def out_features(module: Any) -> int | None:
    """The output width of a linear module (``nn.Linear``, GPT-2's ``Conv1D``, a bridge around
    either), from the module itself; ``None`` where it is not a linear module."""
    if module is None:
        return None
    for m in (getattr(module, "original_component", None), module):
        if m is None:
            continue
        if isinstance(getattr(m, "out_features", None), int):
            return int(m.out_features)
        if isinstance(getattr(m, "nf", None), int):  # transformers' Conv1D: weight [in, out]
            return int(m.nf)
    return None


def submodule(module: Any, name: str) -> Any:
    """``module.<name>`` where ``name`` may be a keyword (the bridge's ``mlp.in``)."""
    return module._modules.get(name) if hasattr(module, "_modules") else None


def mlp_width(model: Any) -> int:
    """The number of neurons of each layer's MLP, read from the weights: the input width of the
    down projection (the matrix whose columns the neurons write). Never from the config:
    TransformerLens 4.3's bridge sets ``cfg.d_mlp`` to 4 × d_model for OPT and XGLM whatever their
    ``ffn_dim`` is. Layers of different widths, and mixture-of-experts MLPs (whose experts the
    bridge does not hook), are refused."""
    widths = [_down_in_features(model, layer) for layer in range(int(model.cfg.n_layers))]
    if len(set(widths)) != 1:
        raise LangNeuronsError(f"the MLP layers have different widths {widths}; only models whose layers all have "
                               "the same number of neurons are supported")
    return widths[0]


def _down_in_features(model: Any, layer: int) -> int:
    mlp = model.blocks[layer].mlp
    original = getattr(mlp, "original_component", None)
    owner = original if original is not None else mlp  # the Hugging Face module, or TL's own
    if hasattr(owner, "experts") or hasattr(mlp, "experts"):
        experts = getattr(owner, "experts", None)
        n = getattr(experts, "num_experts", None) or (len(experts) if isinstance(experts, torch.nn.ModuleList) else "")
        raise LangNeuronsError(
            f"layer {layer}'s MLP is a mixture of experts ({type(owner).__name__}{f', {n} experts' if n else ''}): the "
            "units of this package are the neurons of one dense MLP per layer, and TransformerLens hooks only the "
            "expert block's input and output (d_model wide), not each expert's neurons; experts' neurons as units "
            "(expert, layer, index) are not supported")
    down = getattr(mlp, "out", None)  # a bridge's down projection (LinearBridge)
    if down is not None:
        down = getattr(down, "original_component", down)
        if isinstance(getattr(down, "in_features", None), int):  # nn.Linear, or a peft layer wrapping one
            return int(down.in_features)
        if type(down).__name__ == "Conv1D":  # GPT-2's transposed linear: weight is [in, out]
            return int(down.weight.shape[0])
    w_out = getattr(mlp, "W_out", None)
    if down is None and isinstance(w_out, torch.Tensor):  # a HookedTransformer: W_out is [d_mlp, d_model]
        return int(w_out.shape[0])
    raise LangNeuronsError(f"cannot find the down projection of layer {layer}'s MLP ({type(owner).__name__}) to read "
                           "its width from")


def _resolve(site: str):
    def resolve(model: Any, arg: str | None) -> Site:
        n_layers = int(model.cfg.n_layers)
        gated = is_gated(model)
        d_mlp = mlp_width(model)
        layers = []
        for l in range(n_layers):
            pre, post = f"blocks.{l}.mlp.hook_pre", f"blocks.{l}.mlp.hook_post"
            if site == "act" and gated:
                # φ(gate) has no hook: read φ(hook_pre), write hook_post (v · up for set/add/patch)
                part = Part(pre, d_mlp, 0, site, read_fn=activation_fn(model, l), write_hook=post,
                            times_hook=f"blocks.{l}.mlp.hook_pre_linear")
            elif site == "pre":
                part = Part(pre, d_mlp, 0, site)
            else:  # act on a non-gated MLP is hook_post; post is hook_post on both
                part = Part(post, d_mlp, 0, site)
            layers.append((part,))
        return Site(site, site, gated, n_layers, d_mlp, tuple(layers))
    return resolve


KINDS = (
    UnitKind("act", _resolve("act"), "MLP neurons φ(gate x) (gated) or φ(W_1 x) (default)"),
    UnitKind("pre", _resolve("pre"), "MLP neurons before φ: gate x, or W_1 x"),
    UnitKind("post", _resolve("post"), "MLP neurons after φ (and the up product): the down projection's input"),
)
