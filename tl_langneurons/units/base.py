"""The unit registry's types: a :class:`Part` (one hook's share of a layer's units), a
:class:`Site` (a unit kind resolved for one model) and a :class:`UnitKind` (how to resolve it).

A *unit* is one scalar the package reads at every token and may write back: an MLP neuron, one
output of a linear projection, an SAE feature. A layer's units are one vector of width
``Site.d_mlp``; a site that reads several hooks per layer (``linear``: q, k, v, o, gate, up,
down) lays their outputs side by side in it, each :class:`Part` at its ``offset``. Statistics,
neuron sets and interventions address units as ``(layer, index)`` whatever the kind.

How a part is read: ``read(hook output)`` → ``[batch, pos, width]`` (the output itself with any
head axes flattened, φ of it, an SAE's encoder). How it is written (interventions): the hook
``write_hook`` (default: the one read) gets a copy of its output, the part's ``edit`` exposes the
units as a ``[batch, pos, width]`` tensor, the modes write into it, and ``edit`` turns that back
into the hook's output (a view of the copy: nothing to do; an SAE: ``x + (f' − f) W_dec``). With
``times_hook`` set, ``set``/``add``/``patch`` write ``v ⊙ (that hook's output)`` (a gated MLP's
``φ(gate) := v`` is ``post := v · up``).
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ..errors import LangNeuronsError


def flat(out: Tensor) -> Tensor:
    """``[batch, pos, *]`` → ``[batch, pos, width]`` (heads flattened; a view where it can be)."""
    return out if out.ndim == 3 else out.reshape(*out.shape[:2], -1)


@dataclass(frozen=True)
class Part:
    """One hook's units within a layer: read from ``hook``, ``width`` of them, the first at
    ``offset`` of the layer's unit vector."""

    hook: str
    width: int
    offset: int = 0
    name: str = ""  # e.g. "q", for tables and error messages
    read_fn: Callable[[Tensor], Tensor] | None = None  # hook output → units; None: flat(output)
    write_hook: str | None = None  # where new values are written; None: the hook read
    times_hook: str | None = None  # set/add/patch write v ⊙ this hook's output
    edit_fn: Callable[[Tensor, Callable[[Tensor], None]], Tensor] | None = None  # codec write (SAE)

    def read(self, out: Tensor) -> Tensor:
        return flat(out) if self.read_fn is None else self.read_fn(out)

    @property
    def writes_at(self) -> str:
        return self.hook if self.write_hook is None else self.write_hook

    def edit(self, x: Tensor, apply: Callable[[Tensor], None]) -> Tensor:
        """``x`` is a private copy of the write hook's output; ``apply`` writes into a
        ``[batch, pos, width]`` tensor of this part's units in place. Returns the new output."""
        if self.edit_fn is not None:
            return self.edit_fn(x, apply)
        units = flat(x)
        if units.data_ptr() != x.data_ptr() or not units.is_contiguous():  # pragma: no cover - a clone is contiguous
            raise LangNeuronsError(f"hook {self.writes_at!r}: its output cannot be written as units")
        apply(units)
        return x


@dataclass(frozen=True)
class Site:
    """A unit kind resolved for one model: ``parts[l]`` are layer ``l``'s parts, in unit order.

    ``d_mlp`` is the number of units per layer (the name of that axis in :class:`NeuronStats`),
    read from the model's modules or weights, never from a configuration default.
    ``devices[l]`` is the device layer ``l``'s activations were seen on by :func:`check_site`
    (``None`` from :func:`resolve_site`, which runs nothing).
    """

    name: str
    kind: str
    gated: bool
    n_layers: int
    d_mlp: int
    parts: tuple[tuple[Part, ...], ...]
    devices: tuple[str, ...] | None = None
    info: dict = field(default_factory=dict, compare=False)  # recorded in artifacts (e.g. an SAE's hash)

    @property
    def hook_names(self) -> tuple[str, ...]:
        """Each layer's first read hook (the only one for a one-part site)."""
        return tuple(p[0].hook for p in self.parts)

    def read(self, hook_output: Tensor) -> Tensor:
        """A one-part site's units from its hook's output."""
        if any(len(p) != 1 for p in self.parts):
            raise LangNeuronsError(f"site {self.name!r} reads several hooks per layer; read each part")
        return self.parts[0][0].read(hook_output)

    def layout(self) -> list[dict]:
        """Where each part's units lie in a layer's vector (the same in every layer)."""
        return [{"part": p.name, "offset": p.offset, "width": p.width} for p in self.parts[0]]

    def with_devices(self, devices: tuple[str, ...]) -> "Site":
        return replace(self, devices=devices)


@dataclass(frozen=True)
class UnitKind:
    """A registered unit kind: ``resolve(model, arg)`` → a :class:`Site` (``arg`` is what follows
    ``name:`` in a site string like ``sae:DIR``, or ``None``)."""

    name: str
    resolve: Callable[[Any, str | None], Site]
    help: str
    takes_arg: bool = False  # "name:ARG" (sae:DIR) instead of a bare name
