"""The unit registry: where a model's units are read and how they are written (methods page: [sites](methods.md#sites)).

A site string names a registered unit kind, ``"act"``, or a kind with an argument,
``"sae:DIR"``. :func:`resolve_site` turns it into a :class:`Site` for one model (no forward
pass); :func:`check_site` also runs two tokens through the model and checks that every hook
fires with the width the site expects. The recorder (:mod:`..record`), the interventions
(:mod:`..intervene`) and everything downstream go through these two functions only.

Adding a unit kind is one module with a ``resolve(model, arg) -> Site`` function and one
:func:`register_unit` call (the built-in kinds are registered at the bottom of this file);
``tests/test_units.py`` registers a toy kind and runs it end to end.
"""

import torch

from ..errors import LangNeuronsError, choices
from .base import Part, Site, UnitKind, flat

_KINDS: dict[str, UnitKind] = {}


def register_unit(kind: UnitKind, *, replace: bool = False) -> UnitKind:
    """Add a unit kind to the registry (``replace=True`` to overwrite one of the same name)."""
    if not isinstance(kind, UnitKind):
        raise LangNeuronsError(f"register_unit takes a UnitKind, got {type(kind).__name__}")
    if ":" in kind.name or not kind.name:
        raise LangNeuronsError(f"unit kind name {kind.name!r} must be non-empty and contain no ':'")
    if kind.name in _KINDS and not replace:
        raise LangNeuronsError(f"unit kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_unit(name: str) -> None:
    _KINDS.pop(name, None)


def unit_kinds() -> dict[str, UnitKind]:
    """The registered kinds by name, in registration order."""
    return dict(_KINDS)


def allowed() -> str:
    return choices([k.name + (":ARG" if k.takes_arg else "") for k in _KINDS.values()])


def site_help() -> str:
    """One line per kind, for the command line's ``--site`` help."""
    return "; ".join(f"{k.name}{':ARG' if k.takes_arg else ''}: {k.help}" for k in _KINDS.values())


def parse_site(site) -> tuple[UnitKind, str | None]:
    """``"act"`` → (act, None); ``"sae:DIR"`` → (sae, "DIR"). Raises naming the allowed kinds."""
    if not isinstance(site, str) or not site:
        raise LangNeuronsError(f"site must be a string; allowed: {allowed()}")
    name, sep, arg = site.partition(":")
    kind = _KINDS.get(name)
    if kind is None:
        raise LangNeuronsError(f"unknown site {site!r}; allowed: {allowed()}")
    if kind.takes_arg and not arg:
        raise LangNeuronsError(f"site {name!r} needs an argument: {name}:ARG ({kind.help})")
    if not kind.takes_arg and sep:
        raise LangNeuronsError(f"site {name!r} takes no argument, got {site!r}")
    return kind, (arg if kind.takes_arg else None)


def check_site_name(site) -> str:
    """``site`` if it names a registered kind (checked without a model)."""
    parse_site(site)
    return site


def resolve_site(model, site: str) -> Site:
    """The :class:`Site` ``site`` names on ``model``: hooks, widths, read and write rules. Runs nothing."""
    kind, arg = parse_site(site)
    resolved = kind.resolve(model, arg)
    for layer, parts in enumerate(resolved.parts):
        for p in (h for part in parts for h in (part.hook, part.writes_at, part.times_hook) if h is not None):
            if p not in model.hook_dict:
                raise LangNeuronsError(f"site {site!r}: this model has no hook {p!r}")
        if sum(part.width for part in parts) != resolved.d_mlp:
            raise LangNeuronsError(f"site {site!r}: layer {layer}'s parts hold {sum(p.width for p in parts)} units, "
                                   f"expected {resolved.d_mlp}")
    return resolved


def check_site(model, site: str) -> Site:
    """Resolve ``site`` and check on a two-token input that every part's hook fires with the
    width the site expects; the returned site records the device of each layer's activations."""
    resolved = resolve_site(model, site)
    seen: dict[tuple[int, int], tuple] = {}
    devices: dict[tuple[int, int], str] = {}

    def make(layer: int, i: int, part: Part):
        def hook(act, hook):
            seen[layer, i] = tuple(part.read(act).shape)
            devices[layer, i] = str(act.device)
        return hook

    hooks = [(part.hook, make(l, i, part)) for l, parts in enumerate(resolved.parts) for i, part in enumerate(parts)]
    tok = torch.tensor([[_first_token(model), _first_token(model)]], device=model.cfg.device)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tok, return_type=None)
    per_layer = []
    for layer, parts in enumerate(resolved.parts):
        for i, part in enumerate(parts):
            if (layer, i) not in seen:
                raise LangNeuronsError(f"site {site!r}: hook {part.hook!r} never fired")
            if seen[layer, i][-1] != part.width:
                raise LangNeuronsError(f"site {site!r}: hook {part.hook!r} has width {seen[layer, i][-1]}, but the "
                                       f"model's weights give {part.name!r} {part.width} units; this architecture's "
                                       "hooks are not its units")
        where = {devices[layer, i] for i in range(len(parts))}
        if len(where) > 1:
            raise LangNeuronsError(f"site {site!r}: layer {layer}'s units are computed on several devices "
                                   f"({sorted(where)}); place each layer on one device")
        per_layer.append(where.pop())
    return resolved.with_devices(tuple(per_layer))


def _first_token(model) -> int:
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return int(bos) if bos is not None else 0


# -- the built-in kinds: one registration each --------------------------------------------------

from . import linear, mlp, sae  # noqa: E402

for _kind in (*mlp.KINDS, *linear.KINDS, sae.KIND):
    register_unit(_kind)

SITES = tuple(_KINDS)  # the kinds registered by the package itself (a snapshot, for help texts)

__all__ = ["Part", "Site", "UnitKind", "flat", "register_unit", "unregister_unit", "unit_kinds", "parse_site",
           "check_site_name", "resolve_site", "check_site", "site_help", "SITES"]
