"""Where a model's "neurons" are read: the site.

Loading a model is :mod:`.loading` (:func:`load_model`, the back ends in :mod:`.backends`), its
identity :mod:`.identity` (:func:`weights_hash`, :func:`fingerprint`, :func:`compatible`); their
public names are importable from here too, as before they moved.

Sites (methods page: [sites](methods.md#sites)):

=========  ===============================================  =========================================
site       gated MLP (Llama, Mistral, Qwen, Gemma)          non-gated MLP (GPT-2, BLOOM, OPT, XGLM)
=========  ===============================================  =========================================
``act``    ``φ(gate x)``: φ applied to ``mlp.hook_pre``      ``φ(W_1 x)`` = ``mlp.hook_post``
``pre``    ``gate x`` = ``mlp.hook_pre``                     ``W_1 x`` = ``mlp.hook_pre``
``post``   ``φ(gate x) ⊙ up x`` = ``mlp.hook_post``          ``mlp.hook_post``
=========  ===============================================  =========================================

Whether an MLP is gated is read from the model itself (does ``hook_pre_linear`` exist), and φ is
the activation module the model really uses; nothing is inferred from the model's name.
"""

from dataclasses import dataclass, replace
from collections.abc import Callable
from typing import Any

import torch

from .errors import LangNeuronsError, choices

SITES = ("act", "pre", "post")

# ---------------------------------------------------------------------------------------------
# Sites


@dataclass(frozen=True)
class Site:
    """Where a model's neurons are read, resolved for one model.

    ``hook_names[l]`` is the TransformerLens hook whose output, passed through ``transform``, is the
    ``[batch, pos, d_mlp]`` site activation of layer ``l``. ``devices[l]`` is the device that
    activation was seen on by :func:`check_site` (``None`` from :func:`resolve_site`, which runs
    nothing): on a model dispatched over several devices each layer's is its own.
    """

    name: str
    gated: bool
    n_layers: int
    d_mlp: int
    hook_names: tuple[str, ...]
    transform: Callable[[torch.Tensor], torch.Tensor] | None  # None = identity
    devices: tuple[str, ...] | None = None

    def read(self, hook_output: torch.Tensor) -> torch.Tensor:
        return hook_output if self.transform is None else self.transform(hook_output)


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


def resolve_site(model: Any, site: str) -> Site:
    if site not in SITES:
        raise LangNeuronsError(f"unknown site {site!r}; allowed: {choices(SITES)}")
    n_layers, d_mlp = int(model.cfg.n_layers), mlp_width(model)
    gated = is_gated(model)
    transform = None
    if site == "act" and gated:
        hook, transform = "hook_pre", activation_fn(model)
    elif site == "pre":
        hook = "hook_pre"
    else:  # act on a non-gated MLP is hook_post; post is hook_post on both
        hook = "hook_post"
    names = tuple(f"blocks.{l}.mlp.{hook}" for l in range(n_layers))
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise LangNeuronsError(f"site {site!r}: this model has no hook {missing[0]!r}")
    return Site(site, gated, n_layers, d_mlp, names, transform)


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


def check_site(model: Any, site: str) -> Site:
    """Resolve ``site`` and check on a two-token input that every layer's hook fires with the width
    of the MLP (:func:`mlp_width`); the returned site records the device of each layer's activation."""
    resolved = resolve_site(model, site)
    seen: dict[int, tuple] = {}
    devices: dict[int, str] = {}

    def make(layer: int):
        def hook(act, hook):
            seen[layer] = tuple(act.shape)
            devices[layer] = str(act.device)
        return hook

    tok = torch.tensor([[_first_token(model), _first_token(model)]], device=model.cfg.device)
    with torch.no_grad(), model.hooks(fwd_hooks=[(n, make(l)) for l, n in enumerate(resolved.hook_names)]):
        model(tok, return_type=None)
    for layer in range(resolved.n_layers):
        if layer not in seen:
            raise LangNeuronsError(f"site {site!r}: hook {resolved.hook_names[layer]!r} never fired")
        if seen[layer][-1] != resolved.d_mlp:
            raise LangNeuronsError(
                f"site {site!r}: hook {resolved.hook_names[layer]!r} has width {seen[layer][-1]}, but the MLP's down "
                f"projection has {resolved.d_mlp} inputs; this architecture's hooks are not its neurons"
            )
    return replace(resolved, devices=tuple(devices[l] for l in range(resolved.n_layers)))


def _first_token(model: Any) -> int:
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return int(bos) if bos is not None else 0


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
# Names that moved out of this module, still importable from it. Resolved on first use (PEP 562):
# those modules import the sites from here, so importing them at the top would be circular.

_MOVED = {
    **{name: "loading" for name in ("load_model", "boot_hf")},
    **{name: "backends" for name in ("backend", "is_hooked")},
    **{name: "identity" for name in ("model_name", "weights_hash", "identity", "compatible", "fingerprint")},
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
