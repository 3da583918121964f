"""Where a model's "neurons" are read: the site.

Loading a model is :mod:`.loading` (:func:`load_model`, the back ends in :mod:`.backends`), its
identity :mod:`.identity` (:func:`weights_hash`, :func:`fingerprint`, :func:`compatible`); their
public names are importable from here too, as before they moved.

Sites (methods page: [sites](methods.md#sites)) are the unit registry's (:mod:`.units`, page
[units](units.md)): MLP neurons ``act``/``pre``/``post`` (:mod:`.units.mlp`), every linear output
``q``/``k``/``v``/``o``/``up``/``down``/``linear`` (:mod:`.units.linear`) and SAE features
``sae:DIR`` (:mod:`.units.sae`).
"""

from typing import Any

import torch

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
