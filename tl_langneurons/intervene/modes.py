"""Intervention modes: how a neuron's activation ``a`` is rewritten, one :class:`Mode` per mode, all
registered here by name (methods page: [interventions](methods.md#interventions)).

=========  =====================================================================================
``zero``   ``a := 0`` (Tang: deactivation)
``set``    ``a := factor · v``, ``v`` a constant (``value=``) or a statistic of a language
           (``stats=``, ``statistic=``): Kojima, Rahmanisa, Gurgurov "replacement"
``scale``  ``a := factor · a`` (Rahmanisa: amplification)
``add``    ``a := a + factor · v`` (Gurgurov: language arithmetic, ``v`` = the target's mean)
``patch``  ``a := a'``, ``a'`` from a cached run on another input (:func:`cache_site_activations`)
=========  =====================================================================================

Everything that takes a mode reads it from this registry and nowhere else: :class:`Intervention`'s
argument checks, the hooks of :func:`intervene`, which modes steering and lm-eval tasks accept,
and the command line's ``--mode`` choices, checks and help.

Adding a mode is one call (a test does it with ``negate``)::

    from tl_langneurons.intervene.modes import Mode, register_mode

    register_mode(Mode("negate", lambda a, v, factor: -a, help="a := -a", steers=True, tasks=True))

A rule is ``rule(a, v, factor) -> new a``: ``a`` the activations of the selected neurons at the
selected positions (``[batch, pos, n]``, a copy), ``v`` the mode's operand (``[n]`` from
``factor · value`` or ``factor · statistic`` for a mode taking ``value``/``stats``,
``[batch, pos, n]`` from ``source`` for one taking ``source``; else ``None``), ``factor`` the
intervention's factor (``None`` where not given). It may return a tensor or a number (broadcast).

On a gated MLP's ``act`` site, ``a = φ(gate x)`` is written through ``post = φ(gate x) · up x``: the
rule is applied to ``post`` with ``v · up x`` as its operand. That is exact for every rule linear in
``(a, v)`` — ``a := c · a + d · v``, as all of the above and ``negate`` are — and wrong for any
other, which has to be written at ``pre`` or ``post`` instead.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor

from ..errors import LangNeuronsError, choices

ARGUMENTS = ("value", "factor", "stats", "source")  # the arguments of Intervention a mode may take


@dataclass(frozen=True)
class Mode:
    """One intervention mode.

    Attributes:
        name: what ``mode=`` / ``--mode`` says.
        rule: ``rule(a, v, factor) -> new a`` (see the module docstring).
        help: one line, ``a := ...``: the command line's ``--mode`` help is made of these.
        takes: which of :data:`ARGUMENTS` the mode accepts (any other given is refused).
        required: which it needs, each of them.
        one_of: of which it needs exactly one (``set``/``add``: a constant or a statistic).
        steers: can steer generation towards a target language (``steer``, ``lss``).
        tasks: can run under lm-eval tasks (nothing a task cannot give, e.g. no patch source).
    """

    name: str
    rule: Callable[[Tensor, Tensor | None, float | None], Tensor | float]
    help: str
    takes: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    steers: bool = False
    tasks: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise LangNeuronsError(f"a mode's name must be an identifier, got {self.name!r}")
        if not callable(self.rule):
            raise LangNeuronsError(f"mode {self.name!r}: rule must be callable, got {self.rule!r}")
        for what in ("takes", "required", "one_of"):
            bad = [a for a in getattr(self, what) if a not in ARGUMENTS]
            if bad:
                raise LangNeuronsError(f"mode {self.name!r}: unknown argument {bad[0]!r} in {what}; "
                                       f"allowed: {choices(ARGUMENTS)}")
        untaken = [a for a in (*self.required, *self.one_of) if a not in self.takes]
        if untaken:
            raise LangNeuronsError(f"mode {self.name!r} requires {untaken[0]!r} but does not take it")
        if "source" in self.takes and self.takes_value:
            raise LangNeuronsError(f"mode {self.name!r}: a patch source and a value/statistic exclude each other")

    @property
    def takes_value(self) -> bool:
        """Its operand ``v`` is ``factor · value`` or ``factor · statistic``."""
        return "value" in self.takes or "stats" in self.takes

    @property
    def takes_source(self) -> bool:
        """Its operand ``v`` is read from a cached run (a :class:`SiteCache`) at absolute positions."""
        return "source" in self.takes

    @property
    def needs_stats(self) -> bool:
        """Needs recorded statistics where no constant can be given (the command line has no
        ``--value``): it takes ``stats`` and must have a value."""
        return "stats" in self.required or "stats" in self.one_of

    @property
    def writes_through_up(self) -> bool:
        """Its operand is in units of ``a``: on a gated ``act`` it is multiplied by ``up x``."""
        return self.takes_value or self.takes_source


_REGISTRY: dict[str, Mode] = {}
MODES: Mapping[str, Mode] = MappingProxyType(_REGISTRY)  # name → Mode, live and read-only


def register_mode(mode: Mode, *, replace: bool = False) -> Mode:
    """Add ``mode`` to the registry (``replace=True`` to redefine a name already there)."""
    if not isinstance(mode, Mode):
        raise LangNeuronsError(f"register_mode takes a Mode, got {type(mode).__name__}")
    if mode.name in _REGISTRY and not replace:
        raise LangNeuronsError(f"mode {mode.name!r} is already registered; pass replace=True to redefine it")
    _REGISTRY[mode.name] = mode
    return mode


def unregister_mode(name: str) -> None:
    """Remove a registered mode (a test's toy mode, say)."""
    get_mode(name)
    del _REGISTRY[name]


def get_mode(name, allowed=None, what: str = "mode") -> Mode:
    """The registered mode ``name``; unknown (or not among ``allowed`` names) → the error naming
    the modes allowed."""
    names = list(_REGISTRY) if allowed is None else list(allowed)
    if not isinstance(name, str) or name not in _REGISTRY or name not in names:
        raise LangNeuronsError(f"unknown {what} {name!r}; allowed: {choices(names)}")
    return _REGISTRY[name]


def mode_names(*, steers: bool | None = None, tasks: bool | None = None) -> tuple[str, ...]:
    """The registered modes' names in registration order; ``steers=True`` / ``tasks=True`` keeps
    those that can steer / run under lm-eval tasks."""
    return tuple(m.name for m in _REGISTRY.values()
                 if (steers is None or m.steers == steers) and (tasks is None or m.tasks == tasks))


def modes_help(names) -> str:
    """``name (a := ...), ...``: the command line's ``--mode`` help for these modes."""
    return ", ".join(f"{n} ({_REGISTRY[n].help})" for n in names)


# ---------------------------------------------------------------------------------------------
# The built-in modes. The rules return exactly what the hooks wrote before the registry existed,
# so every result is bit-identical.

_VALUE = ("value", "factor", "stats")

ZERO = register_mode(Mode("zero", lambda a, v, factor: 0.0, "a := 0", tasks=True))
SET = register_mode(Mode("set", lambda a, v, factor: v, "a := factor x statistic", takes=_VALUE,
                         one_of=("value", "stats"), steers=True, tasks=True))
SCALE = register_mode(Mode("scale", lambda a, v, factor: a * factor, "a := factor x a", takes=("factor",),
                           required=("factor",), steers=True, tasks=True))
ADD = register_mode(Mode("add", lambda a, v, factor: a + v, "a := a + factor x statistic", takes=_VALUE,
                         one_of=("value", "stats"), steers=True, tasks=True))
PATCH = register_mode(Mode("patch", lambda a, v, factor: v, "a := the activation of a cached run",
                           takes=("source",), required=("source",)))
