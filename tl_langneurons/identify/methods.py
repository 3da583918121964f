"""Identification methods, registered by name: one :class:`Method` per method — the function that
finds the neurons, its options (their defaults are the function's own), the statistics it needs.

Everything that offers or describes a method reads this registry: the command line's ``identify``
(``--method`` choices, one option group per method with its help and defaults, the check that an
option belongs to the method, the check that the statistics hold what it needs, the call), the
report's description of a neuron set, and the entropy figure's selection cutoff.

Adding a method is one call. For a method shipped with the package, write its function in its own
module of :mod:`tl_langneurons.identify` and add the call at the end of this file; a user's own method
is registered the same way before the command line runs (``tests/test_registries.py`` does it with a
toy "top-p-by-mean")::

    from tl_langneurons.identify.methods import Method, Option, register_method

    def top_by_mean(stats, top_m: int = 10):            # stats → LanguageNeurons
        ...

    register_method(Method("top-by-mean", top_by_mean, "each language's top_m neurons by mean activation",
                           options=(Option("top_m", int, "neurons per language"),)))

``identify --method top-by-mean --top-m 5`` then runs it. The function takes the
:class:`~tl_langneurons.stats.NeuronStats` first and each option as a keyword argument; an option's
default is read from the function's signature (one place). Options are command-line flags
(``top_m`` → ``--top-m``); two methods may share an option name if they give it the same type.
"""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import LangNeuronsError, choices

OPTION_TYPES = (float, int, str, bool, "languages")  # bool: a flag; "languages": a comma-separated list
# What a method may need beyond the per-token counts: the NeuronStats field that holds it, what it
# is, and the record command's flag that records it.
STATISTICS_NEEDED = {"sentence_means": ("sentence_means", "per-sentence means", "--sentence-means"),
                     "plnd": ("importance_sum", "PLND importance", "--plnd")}


@dataclass(frozen=True)
class Option:
    """One option of a method.

    Attributes:
        name: the function's keyword argument (the flag is ``--`` + name with ``_`` → ``-``).
        type: one of :data:`OPTION_TYPES`.
        help: one line for ``identify --help``.
        needs: statistics needed when the option is given (e.g. ``all_sentences``: sentence means).
        choices: the values allowed (a ``str`` option), if only some are.
    """

    name: str
    type: Any
    help: str
    needs: tuple[str, ...] = ()
    choices: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise LangNeuronsError(f"an option's name must be an identifier, got {self.name!r}")
        if self.type not in OPTION_TYPES:
            raise LangNeuronsError(f"option {self.name!r}: unknown type {self.type!r}; allowed: {choices(OPTION_TYPES)}")
        _check_needs(self.needs, f"option {self.name!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Method:
    """One identification method.

    Attributes:
        name: what ``--method`` says.
        function: ``function(stats, **options) -> LanguageNeurons``.
        help: one line: what it is, whose it is.
        options: its options, in the order ``--help`` lists them.
        needs: statistics it always needs (of :data:`STATISTICS_NEEDED`).
        exactly_one: exactly one of its options must be given (``threshold``'s three criteria).
        records_as: the ``method`` its neuron sets record (default: ``name``).
        entropy_cutoff: for the entropy figure, ``params → (lape_entropy kwargs, n_kept or None)``
            from a set's recorded parameters; ``None``: LAPE's defaults and no cutoff is marked.
        describe: for the report, ``params → a sentence`` saying how a set was found (``None``
            where the parameters do not say enough); without it the report names the method and
            its parameters.
    """

    name: str
    function: Callable
    help: str
    options: tuple[Option, ...] = ()
    needs: tuple[str, ...] = ()
    exactly_one: bool = False
    records_as: str | None = None
    entropy_cutoff: Callable[[dict], tuple[dict, int | None]] | None = None
    describe: Callable[[dict], str | None] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name.startswith("-") or " " in self.name:
            raise LangNeuronsError(f"a method's name must be one word, got {self.name!r}")
        if not callable(self.function):
            raise LangNeuronsError(f"method {self.name!r}: function must be callable, got {self.function!r}")
        params = inspect.signature(self.function).parameters
        for o in self.options:
            if not isinstance(o, Option):
                raise LangNeuronsError(f"method {self.name!r}: options must be Option, got {type(o).__name__}")
            if o.name not in params:
                raise LangNeuronsError(f"method {self.name!r}: option {o.name!r} is not an argument of "
                                       f"{self.function.__name__}; its arguments: {choices(params)}")
        _check_needs(self.needs, f"method {self.name!r}")
        if self.records_as is None:
            object.__setattr__(self, "records_as", self.name)

    def default(self, option: str) -> Any:
        """The function's default for ``option`` (``None`` where it has none)."""
        p = inspect.signature(self.function).parameters[option]
        return None if p.default is inspect.Parameter.empty else p.default

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def needs_for(self, given) -> list[tuple[str, str]]:
        """``(statistic, who needs it)`` for a run with the options ``given``: the method's own
        needs, then those of the options given."""
        out = [(s, f"--method {self.name}") for s in self.needs]
        out += [(s, o.flag) for o in self.options if o.name in given for s in o.needs]
        return out

    def check_statistics(self, stats, given, where: str) -> None:
        """Refuse statistics that lack what this run needs, naming the flag that records it."""
        for need, who in self.needs_for(given):
            field, what, flag = STATISTICS_NEEDED[need]
            if getattr(stats, field, None) is None:
                raise LangNeuronsError(f"{who} needs {what}, which {where} does not hold: record the statistics "
                                       f"again with {flag}")

    def check_given(self, given) -> None:
        """Refuse options of other methods and, for ``exactly_one``, anything but one option."""
        mine = {o.name for o in self.options}
        for k in given:
            if k not in mine:
                owners = [m.name for m in _REGISTRY.values() if any(o.name == k for o in m.options)]
                flag = "--" + k.replace("_", "-")
                raise LangNeuronsError(f"{flag} is an option of --method {' and '.join(owners)}, not of --method "
                                       f"{self.name} (whose options are "
                                       f"{', '.join(o.flag for o in self.options) or 'none'})")
        if self.exactly_one and len(given) != 1:
            raise LangNeuronsError(f"--method {self.name} needs exactly one of "
                                   f"{', '.join(o.flag for o in self.options)}; got "
                                   f"{', '.join(self.option(k).flag for k in given) or 'none'}")

    def run(self, stats, **options):
        """The neuron set: ``function(stats, **options)``."""
        return self.function(stats, **options)


def _check_needs(needs, what: str) -> None:
    bad = [s for s in needs if s not in STATISTICS_NEEDED]
    if bad:
        raise LangNeuronsError(f"{what}: unknown statistic needed {bad[0]!r}; allowed: {choices(STATISTICS_NEEDED)}")


_REGISTRY: dict[str, Method] = {}
METHODS: Mapping[str, Method] = MappingProxyType(_REGISTRY)  # name → Method, live and read-only


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to redefine a name already there). An
    option name another method has too must have the same type (the command line has one flag)."""
    if not isinstance(method, Method):
        raise LangNeuronsError(f"register_method takes a Method, got {type(method).__name__}")
    if method.name in _REGISTRY and not replace:
        raise LangNeuronsError(f"method {method.name!r} is already registered; pass replace=True to redefine it")
    for o in method.options:
        for other in _REGISTRY.values():
            theirs = next((x for x in other.options if x.name == o.name), None)
            if other.name != method.name and theirs is not None and theirs.type != o.type:
                raise LangNeuronsError(f"method {method.name!r}: option {o.name!r} has type {o.type!r}, but method "
                                       f"{other.name!r} has it as {theirs.type!r}; rename it or use the same type")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (a test's toy method, say)."""
    get_method(name)
    del _REGISTRY[name]


def get_method(name) -> Method:
    """The registered method ``name``; unknown → the error naming the methods."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise LangNeuronsError(f"unknown method {name!r}; allowed: {choices(_REGISTRY)}")
    return _REGISTRY[name]


def method_of(neurons) -> Method | None:
    """The registered method that made a neuron set (a :class:`LanguageNeurons`, or the ``method``
    it records), if any."""
    recorded = neurons if isinstance(neurons, str) else neurons.method
    return next((m for m in _REGISTRY.values() if m.records_as == recorded), None)


# ---------------------------------------------------------------------------------------------
# The built-in methods (the order is --help's)

from .ap import ap_experts_all  # noqa: E402
from .baselines import threshold  # noqa: E402
from .entropy import lape  # noqa: E402
from .plnd import EXCLUDE, plnd  # noqa: E402


def _lape_cutoff(params: dict) -> tuple[dict, int | None]:
    """A LAPE set's entropy is computed with its own parameters; the cutoff is the entropy of the
    ``n_kept``-th neuron kept, except with per-layer quotas (one cutoff per layer: none is marked)."""
    kwargs = {k: params[k] for k in ("filter_rate", "activation_bar_ratio", "normalize_entropy") if k in params}
    n_kept = params.get("n_kept")
    return kwargs, n_kept if not params.get("per_layer") and isinstance(n_kept, int) and n_kept > 0 else None


def _pct(x) -> str:
    return f"{100 * x:.3g}%"


def _describe_lape(p: dict) -> str | None:
    if "top_rate" not in p:
        return None
    scope = "of each layer" if p.get("per_layer") else "of the model"
    entropy = "normalised entropy" if p.get("normalize_entropy") else "entropy"
    text = (f"**LAPE** (Tang et al. 2024) kept the {_pct(p['top_rate'])} of neurons {scope}"
            + (f" ({p['n_kept']:,})" if isinstance(p.get("n_kept"), int) else "")
            + f" with the lowest {entropy} of their activation probability over the languages")
    if isinstance(p.get("tau"), (int, float)):
        text += (f", among those that fire on more than {p['tau']:.3g} of some language's tokens (the "
                 f"{100 * p.get('filter_rate', 0.95):g}th percentile of all activation probabilities)")
    if isinstance(p.get("activation_bar"), (int, float)):
        text += f"; a neuron belongs to every language on whose tokens it fires more often than {p['activation_bar']:.3g}"
    return text + "."


def _describe_ap(p: dict) -> str | None:
    if "n" not in p:
        return None
    return (f"**Average precision** (Kojima et al. 2024): for each language, the {p['n'] // 2} units whose "
            f"sentence means best tell its {p.get('n_positive')} sentences from {p.get('n_negative')} of the "
            f"other languages, and the {p['n'] // 2} that tell them apart worst (lowest average precision).")


def _describe_threshold(p: dict) -> str | None:
    if p.get("all_sentences"):
        return ("**Threshold** (Rahmanisa et al. 2025): each language's neurons whose mean activation is above 0 "
                "in every one of its sentences.")
    if "top_m" in p:
        return (f"**Threshold** (Mondal et al. 2025): each language's {p['top_m']} neurons with the highest "
                "activation probability on its tokens (not contrastive: no comparison with the other languages).")
    if "min_probability" in p:
        return (f"**Threshold**: each language's neurons that fire on at least {p['min_probability']:.3g} of its "
                "tokens (not contrastive).")
    return None


register_method(Method(
    "lape", lape, "language activation probability entropy (Tang et al. 2024)",
    options=(Option("top_rate", float, "share of all neurons kept"),
             Option("filter_rate", float, "quantile of p for the eligibility threshold"),
             Option("activation_bar_ratio", float, "quantile of p a language must exceed to own a neuron"),
             Option("normalize_entropy", bool, "divide the entropy by log K"),
             Option("per_layer", bool, "keep top-rate of each layer")),
    entropy_cutoff=_lape_cutoff, describe=_describe_lape))
register_method(Method(
    "ap", ap_experts_all, "expert units by average precision (Kojima et al. 2024)",
    options=(Option("n", int, "units per language, half top and half bottom"),
             Option("n_positive", int, "sentences of the language"),
             Option("n_negative", int, "sentences of the other languages together"),
             Option("languages", "languages", "comma-separated languages to find units for (default: all)")),
    needs=("sentence_means",), records_as="ap_experts", describe=_describe_ap))
register_method(Method(
    "threshold", threshold, "non-contrastive activation-probability baseline (Mondal et al. 2025, "
    "Rahmanisa et al. 2025)",
    options=(Option("top_m", int, "each language's m neurons of highest p (Mondal et al.)"),
             Option("min_probability", float, "each language's neurons with p >= this"),
             Option("all_sentences", bool, "neurons whose sentence mean is > 0 in every sentence (Rahmanisa et al.)",
                    needs=("sentence_means",))),
    exactly_one=True, describe=_describe_threshold))
register_method(Method(
    "plnd", plnd, "parallel language-specific neuron detection by importance (Zhao et al. 2024)",
    options=(Option("consistency", float, "share of a language's documents that must activate a neuron (1.0: every "
                    "document, as Zhao et al.)"),
             Option("exclude", str, "drop neurons activated by any other language (the paper) or only those "
                    "activated by all languages (their released code)", choices=EXCLUDE),
             Option("top_n", int, "instead: each language's N neurons of largest activation-share contrast "
                    "(equal-size sets)")),
    needs=("plnd",)))
