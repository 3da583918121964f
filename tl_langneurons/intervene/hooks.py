"""The hooks that carry out interventions, and the one context manager that adds and removes them.

Sites: values are written where they were measured, as the unit registry says (:mod:`..units`):
each unit's part names the hook it is written at and how (a view of the hook's output; ``v ·
up`` for ``act`` of a gated MLP, whose ``φ(gate)`` has no hook; ``x + (f' − f) W_dec`` for SAE
features). A mode's rule (:mod:`.modes`) writes into a ``[batch, pos, width]`` tensor of one
part's units; on a gated ``act`` it is applied to ``hook_post = φ(gate) ⊙ up`` with its operand
``v`` times ``up`` (``zero``/``scale`` of φ(gate) equal ``zero``/``scale`` of post, ``set``/``add``
/``patch`` to ``v`` mean ``post := v · up``), ``up`` read from ``mlp.hook_pre_linear`` in the same
forward pass (methods page: [sites](methods.md#sites)).

Positions (``positions=``), in absolute positions of the sequence being processed:

* ``"all"`` (default) — every position of every forward call;
* ``"prompt"`` — positions ``< prompt_length``; ``"generated"`` — positions ``≥ prompt_length``;
* ``"last"`` — the last position of each forward call: on a plain forward, position ``T−1`` of
  every row (with right padding that is a pad token for the shorter rows: left-pad, or name the
  positions); during KV-cached generation, the last prompt token and then each generated token as
  it is produced (it stays intervened in the cache). Without a KV cache every step recomputes the
  whole sequence and only its newest token is intervened, so the two differ: to get the cached
  meaning without a cache, name the positions ``P−1 … P+n−1``. :mod:`.evaluate` generates with
  the KV cache (through the wrapped Hugging Face model's ``generate``; with transformers ≥ 5.24
  :mod:`..compat` makes TransformerLens 4.3's attention bridge write that cache), and tests check
  cached equals uncached and equals Hugging Face's own ``generate``;
* a list of absolute positions (ints ≥ 0).

How absolute positions are tracked: the first forward call inside the context (or after
``handle.reset()``) starts a sequence at position 0, and its length is the prompt length unless
``prompt_length=`` is given. A later call of exactly one position continues that sequence (a
KV-cached generation step). Any other later call starts again at position 0 (a generation step
without KV cache re-reads the whole sequence; a new forward on other tokens keeps the prompt
length). To run several generations with ``"prompt"``/``"generated"`` in one context, call
``handle.reset()`` between them, or use one context per generation.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..backends import backend_of
from ..identity import compatible, identity
from ..units import Part, resolve_site
from ..neurons import LanguageNeurons
from .modes import MODES, get_mode
from .specs import DiffMean, Intervention, as_items, check_positions

class InterventionHandle:
    """What ``with intervene(...) as handle`` gives: the interventions and the position tracker."""

    def __init__(self, items: list, prompt_length: int | None):
        self.interventions = items
        self._given_prompt_length = prompt_length
        self.reset(prompt_length)

    def reset(self, prompt_length: int | None = None) -> None:
        """Start a new sequence: the next forward call is at position 0 and sets the prompt length
        (unless ``prompt_length`` is given here or was given to :func:`intervene`)."""
        self.prompt_length = prompt_length if prompt_length is not None else self._given_prompt_length
        self.total: int | None = None  # positions of the current sequence seen so far
        self.offset = 0  # absolute position of the current call's first position
        self.length = 0  # positions in the current call
        self.calls = 0

    def _start_call(self, act: Tensor, hook: Any = None) -> None:
        T = act.shape[1]
        if self.total is None:
            self.offset, self.total = 0, T
            if self.prompt_length is None:
                self.prompt_length = T
        elif T == 1:  # a KV-cached step continues the sequence
            self.offset, self.total = self.total, self.total + 1
        else:  # a new pass over a whole sequence
            self.offset, self.total = 0, T
        self.length = T
        self.calls += 1

    def _select(self, positions, T: int, device) -> slice | Tensor | None:
        """The current call's local positions named by ``positions`` (``None``: none)."""
        if positions == "all":
            return slice(None)
        if positions == "last":
            return slice(T - 1, T)
        if self.calls == 0 or T != self.length:
            raise LangNeuronsError("cannot track positions: the forward pass did not go through the hook that "
                                   "tracks them ('hook_embed', or 'blocks.0.hook_resid_pre' on a HookedTransformer); "
                                   "use positions='all' or 'last'")
        off = self.offset
        if positions in ("prompt", "generated"):
            cut = min(max(self.prompt_length - off, 0), T)
            sel = slice(0, cut) if positions == "prompt" else slice(cut, T)
            return sel if sel.stop > sel.start else None
        local = [p - off for p in positions if off <= p < off + T]
        return torch.tensor(local, device=device) if local else None


def _ix(sel, idx: Tensor) -> tuple:
    """Index ``[:, sel, idx]`` of a ``[batch, pos, n]`` tensor (``sel`` a slice or positions)."""
    return (slice(None), sel, idx) if isinstance(sel, slice) else (slice(None), sel[:, None], idx[None, :])


class _Op:
    """One intervention at one part of one layer, applied inside a hook point's combined hook.

    Its tensors (indices, values, a patch source) are moved to the device and dtype of the
    activation they act on the first time they meet it, and kept there: on a model dispatched
    over several devices each layer's live where that layer computes, copied once per context.
    ``idx_cpu`` are the part's own indices (the layer's minus the part's offset); a patch source
    holds whole layers, read at the layer's indices ``src_idx_cpu``.
    """

    def __init__(self, iv: "Intervention", layer: int, positions, part: Part, times_hook: str | None):
        self.iv, self.layer, self.positions, self.part, self.times_hook = iv, layer, positions, part, times_hook
        self.times_up = times_hook is not None
        self.mode = get_mode(iv.mode)
        full = torch.tensor(iv.layers[layer], dtype=torch.int64)
        keep = (full >= part.offset) & (full < part.offset + part.width)
        amount = iv.amounts.get(layer)
        if bool(keep.all()):  # the whole layer's indices (a one-part site): used as given
            self.src_idx_cpu, self.amount_cpu = full, amount
        else:
            self.src_idx_cpu, self.amount_cpu = full[keep], None if amount is None else amount[keep]
        self.idx_cpu = self.src_idx_cpu - part.offset if part.offset else self.src_idx_cpu
        self._dev: dict = {}

    @property
    def empty(self) -> bool:
        return self.idx_cpu.numel() == 0

    def tensors(self, device, dtype) -> tuple[Tensor, Tensor | None]:
        key = (str(device), dtype)
        if key not in self._dev:
            amount = None if self.amount_cpu is None else self.amount_cpu.to(device, dtype)
            self._dev[key] = (self.idx_cpu.to(device), amount)
        return self._dev[key]

    def apply(self, x: Tensor, up: Tensor | None, handle: InterventionHandle) -> None:
        sel = handle._select(self.positions, x.shape[1], x.device)
        if sel is None:
            return
        idx, amount = self.tensors(x.device, x.dtype)
        ix = _ix(sel, idx)
        v = self._source(sel, x, handle) if self.mode.takes_source else amount
        if self.times_up:  # gated act: φ(gate) := rule(φ(gate), v) means post := rule(post, v · up)
            if up is None:
                raise LangNeuronsError(f"layer {self.layer}: {self.times_hook.rsplit('.', 1)[-1]} did not fire "
                                       f"before {self.part.writes_at.rsplit('.', 1)[-1]}; cannot write "
                                       f"{self.iv.site!r}")
            up = up if up.ndim == 3 else up.reshape(*up.shape[:2], -1)
            # up comes from the same MLP, so the same device (a no-op) unless a device_map split it
            v = v * up.to(x.device)[ix]
        x[ix] = self.mode.rule(x[ix], v, self.iv.factor)

    def _source(self, sel, x: Tensor, handle: InterventionHandle) -> Tensor:
        src = self.iv.source.values[self.layer]
        B, T = x.shape[:2]
        off = handle.offset if handle.calls else 0
        local = torch.arange(T)[sel] if isinstance(sel, slice) else sel.cpu()
        need = int(local.max()) + off + 1
        if src.shape[1] < need:
            raise LangNeuronsError(f"the patch source holds {src.shape[1]} positions; position {need - 1} was asked for")
        if src.shape[0] not in (1, B):
            raise LangNeuronsError(f"the patch source has batch size {src.shape[0]}, the input {B}")
        key = ("source", str(x.device), x.dtype)
        if key not in self._dev:  # the whole source layer, once per device (not once per call)
            self._dev[key] = src.to(x.device, x.dtype)
        src = self._dev[key]
        skey = ("source_idx", str(x.device))
        if skey not in self._dev:
            self._dev[skey] = self.src_idx_cpu.to(x.device)
        idx = self._dev[skey]
        pos = (local + off).to(x.device)
        return src[:, pos[:, None], idx[None, :]].expand(B, -1, -1)


class _SteerOp:
    def __init__(self, steer: DiffMean, positions):
        self.steer, self.positions = steer, positions
        self._dev: dict = {}

    def apply(self, x: Tensor, up, handle: InterventionHandle) -> None:
        sel = handle._select(self.positions, x.shape[1], x.device)
        if sel is None:
            return
        key = (str(x.device), x.dtype)
        if key not in self._dev:
            self._dev[key] = (self.steer.beta * self.steer.direction.double()).to(x.device, x.dtype)
        x[(slice(None), sel)] += self._dev[key]


def _point_hook(ops: list, handle: InterventionHandle, stash: dict):
    """One hook per hook point: copy the activation once, apply the interventions in order (each
    through its part's ``edit``: at one hook point, each sees the result of the ones before it)."""
    needs = sorted({op.times_hook for op in ops if getattr(op, "times_hook", None) is not None})

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        if act.ndim < 3:
            raise LangNeuronsError(f"expected a [batch, pos, width] activation, got shape {tuple(act.shape)}")
        ups = {name: stash.pop(name, None) for name in needs}  # this forward pass's, never a stale one
        # A copy, never in place: a hook registered before this one (an ActivationCache, say) may
        # hold a reference to the clean tensor.
        x = act.clone()
        for op in ops:
            if isinstance(op, _Op):
                up = ups.get(op.times_hook) if op.times_up else None
                x = op.part.edit(x, lambda units, op=op, up=up: op.apply(units, up, handle))
            else:
                op.apply(x, None, handle)
        return x

    return hook


def _stash_hook(stash: dict, name: str):
    def hook(act: Tensor, hook: Any = None) -> None:
        stash[name] = act
    return hook


def _check_models(model: Any, items: list) -> None:
    """Refuse artifacts made on another model (skipped where an artifact records no hash)."""
    named = [(what, m) for item in items for what, m in item.models() if m.get("weights_hash")]
    if named:
        mine = identity(model)
        for what, m in named:
            compatible(m, mine, what, "this model")


def make_hooks(model: Any, interventions, positions="all", prompt_length=None
               ) -> tuple[list[tuple[str, Callable]], InterventionHandle]:
    """The hook factory behind :func:`intervene`: ``(fwd_hooks, handle)`` for ``model.hooks(...)``
    or ``model.run_with_hooks(...)``. Checks everything first; the hooks share ``handle``'s
    position tracker, so use them together and for one context at a time."""
    items = as_items(interventions)
    positions = check_positions(positions)
    prompt_length = _checks.integer("prompt_length", prompt_length, 0, allow_none=True)
    _check_models(model, items)
    handle = InterventionHandle(items, prompt_length)
    n_layers, d_model = int(model.cfg.n_layers), int(model.cfg.d_model)
    points: dict[str, list] = {}  # hook name → ops, in the order given
    stashed: set[str] = set()  # hooks whose output set/add/patch multiply by (gated act: up)
    tracked = False
    for item in items:
        pos = item.positions if item.positions is not None else positions
        # patching reads the source at absolute positions, so it needs them even at "all"
        tracked |= pos != "all" or (isinstance(item, Intervention) and get_mode(item.mode).takes_source)
        if isinstance(item, DiffMean):
            if item.layer >= n_layers or item.direction.shape != (d_model,):
                raise LangNeuronsError(f"the diffmean direction (layer {item.layer}, width {item.direction.shape[0]}) "
                                       f"does not fit this model ({n_layers} layers, d_model={d_model})")
            points.setdefault(item.hook_name, []).append(_SteerOp(item, pos))
            continue
        site = resolve_site(model, item.site)  # raises if the model lacks the site's hooks
        shape = (item.neurons.n_layers, item.neurons.d_mlp) if isinstance(item.neurons, LanguageNeurons) else None
        if shape is not None and shape != (site.n_layers, site.d_mlp):
            raise LangNeuronsError(f"the neuron set is for {shape[0]} layers × {shape[1]} neurons, "
                                   f"this model has {site.n_layers} × {site.d_mlp}")
        item._check_range(site.n_layers, site.d_mlp, "this model")
        writes_value = get_mode(item.mode).writes_through_up  # zero/scale need no multiplier
        for layer in item.layers:
            for part in site.parts[layer]:
                times = part.times_hook if writes_value else None
                op = _Op(item, layer, pos, part, times)
                if op.empty:
                    continue
                points.setdefault(part.writes_at, []).append(op)
                if times is not None:
                    stashed.add(times)
    stash: dict[str, Tensor] = {}
    hooks: list[tuple[str, Callable]] = []
    if tracked:
        # where every forward call starts, as the back end says (a HookedTransformer's generate
        # embeds outside forward, without hook_embed: there, the first block's input)
        order = backend_of(model).call_start
        start = next((n for n in order if n in model.hook_dict), None)
        if start is None:
            raise LangNeuronsError("this model has no 'hook_embed' to track positions; use positions='all' or 'last'")
        hooks.append((start, handle._start_call))
    for name in sorted(stashed, key=_hook_order):
        hooks.append((name, _stash_hook(stash, name)))
    for name, ops in points.items():
        hooks.append((name, _point_hook(ops, handle, stash)))
    return hooks, handle


def _hook_order(name: str) -> tuple:
    """Sort hook names by layer number, then name (``blocks.10`` after ``blocks.9``)."""
    parts = name.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, name)


@contextmanager
def intervene(model: Any, neurons, mode: str | None = None, *, value=None, factor=None, stats=None,
              statistic: str = "mean", language: str | None = None, site: str | None = None, source=None,
              positions="all", prompt_length=None) -> Iterator[InterventionHandle]:
    """Intervene on neurons (or steer the residual stream) for the duration of a ``with`` block.

    ``neurons`` is a :class:`LanguageNeurons` / ``{layer: [indices]}`` dict together with ``mode``
    and its arguments (see :class:`Intervention`), or an :class:`Intervention`, a
    :class:`DiffMean`, or a list of them, applied in order (at the same hook point, each sees the
    result of the ones before it). ``positions`` and ``prompt_length`` are described in the
    module docstring; an item's own ``positions`` overrides the context's.

    Every check happens before any hook is added. On leaving the block — normally or by an
    exception — exactly the hooks this call added are removed (``model.hooks`` does this); hooks
    the caller added before stay.
    """
    if isinstance(neurons, (LanguageNeurons, dict)):
        if mode is None:
            raise LangNeuronsError(f"intervene needs a mode; allowed: {choices(MODES)}")
        items = [Intervention(neurons, mode, value, factor, stats, statistic, language, site, source)]
    else:
        if not isinstance(neurons, (Intervention, DiffMean, list, tuple)):
            raise LangNeuronsError(f"intervene takes a LanguageNeurons, a {{layer: [indices]}} dict, an Intervention, "
                                   f"a DiffMean or a list of them; got {type(neurons).__name__}")
        given = [k for k, v in (("mode", mode), ("value", value), ("factor", factor), ("stats", stats),
                                ("language", language), ("site", site), ("source", source)) if v is not None]
        if given or statistic != "mean":
            raise LangNeuronsError(f"{(given or ['statistic'])[0]}= belongs inside each Intervention "
                                   "when intervene is given Interventions")
        items = as_items(neurons)
    hooks, handle = make_hooks(model, items, positions, prompt_length)
    with model.hooks(fwd_hooks=hooks):
        yield handle