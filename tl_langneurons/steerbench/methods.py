"""The steering methods the benchmark compares, one registry entry each.

An entry says how to steer prompts from ``source`` into ``target`` at one strength (and layer,
for residual directions): the interventions, the same on a random control, and an instruction
put before the prompt (prompting). Adding a method is one :func:`register_method` call; the
benchmark, its command line (``--methods``) and its report read this registry and nothing else.

============== ============================================================================
method          steering (``s`` = the strength tuned on the tuning prompts)
============== ============================================================================
none            nothing (the baseline every row is compared with)
prompt-english  "Continue in German:" before the prompt
prompt-target   the same instruction in the target language ("Weiter auf Deutsch:")
prompt-source   the same instruction in the prompt's language ("Продолжи (язык: немецкий):")
neurons-set     target's LAPE neurons := s × their mean on the target (Kojima-style forcing)
neurons-scale   target's LAPE neurons := s × themselves (Rahmanisa's amplification)
neurons-add     target's LAPE neurons += s × their mean on the target
arithmetic      source's LAPE neurons := 0 and target's += s × their mean (Gurgurov 2025)
ap-median       target's AP experts (top and bottom halves) := s × the median of their
                sentence means on the target (Kojima et al. 2024 force them to the median: s = 1)
plnd-add        target's PLND neurons += s × their mean on the target (Zhao et al. 2024's set;
                needs statistics recorded with PLND importance)
sae-add         target's SAE-LAPE features += s × their mean on the target: the residual gets
                s × Σ mean_f · W_dec[f] (Deng et al. 2025 steer with language SAE features;
                needs the model's SAEs, ``sae=``)
diffmean        + s × (mean residual of the target − of the others) after block ``layer``
probe/pca/lda   + s × that direction's alternative of the same norm (:mod:`.directions`)
============== ============================================================================

Controls: neuron and SAE methods run the same intervention on random neurons (features) with the
same count per layer (:func:`~tl_langneurons.identify.random_like`); direction methods add a
random direction of the same norm; prompting and ``none`` have none.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LangNeuronsError, choices
from ..intervene import DiffMean, Intervention
from ..intervene.modes import ADD, SCALE, SET, ZERO, Mode
from ..evaluate import random_direction_like
from .prompts import instruction


@dataclass(frozen=True)
class Arm:
    """What one method does to one prompt group at one setting."""

    items: list = field(default_factory=list)  # interventions (Intervention / DiffMean), applied together
    control: list | None = None  # the same on random neurons / a random direction; None = no control
    instruction: str | None = None  # put before the prompt, on its own line


@dataclass(frozen=True)
class SteerMethod:
    name: str
    family: str  # none, prompting, neurons, directions
    build: Callable[[Any, str, str, float, int | None], Arm]  # (context, source, target, strength, layer)
    strengths: tuple[float, ...] = ()  # the tuning grid; () = nothing to tune
    uses_layer: bool = False  # tuned over the context's layers too
    per_source: bool = False  # the arm depends on the prompt's language
    # what the context must hold: "lape", "ap", "stats", "residuals" (always there or built on demand);
    # "plnd", "sae" (there only when given: BenchContext.has) — a default run leaves out what it lacks
    needs: tuple[str, ...] = ()
    controlled: bool = False  # its arms carry a random control, run beside it on the same prompts
    description: str = ""


METHODS: dict[str, SteerMethod] = {}


def register_method(method: SteerMethod) -> SteerMethod:
    """Add ``method`` to the benchmark (its name must be new)."""
    if not isinstance(method, SteerMethod):
        raise LangNeuronsError(f"register_method takes a SteerMethod, got {type(method).__name__}")
    if method.name in METHODS:
        raise LangNeuronsError(f"a steering method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def check_methods(names) -> list[SteerMethod]:
    """The methods ``names`` (None: every registered one)."""
    if names is None:
        return list(METHODS.values())
    names = [names] if isinstance(names, str) else list(names)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise LangNeuronsError(f"unknown steering method {bad[0] if bad else names!r}; allowed: {choices(METHODS)}")
    return [METHODS[n] for n in dict.fromkeys(names)]


# a neuron method's experts -> the context's attributes holding them and their random control
_EXPERTS = {"lape": ("lape", "lape_random"), "ap": ("ap", "ap_random"), "plnd": ("plnd", "plnd_random"),
            "sae": ("sae_features", "sae_random")}


def _neurons(mode: Mode, statistic: str | None = None, experts: str = "lape"):
    """``mode`` at strength s on the target's units of ``experts`` (``lape``, ``ap``, ``plnd``
    neurons or ``sae`` features); a mode that writes a statistic writes the target's ``statistic``
    of them, from the statistics of their site."""
    def build(ctx, source, target, s, layer):
        stats = ctx.sae_stats if experts == "sae" else ctx.stats

        def item(sets):
            if mode.takes_value:
                return Intervention(sets, mode.name, factor=s, stats=stats, statistic=statistic, language=target)
            return Intervention(sets, mode.name, factor=s, language=target)
        # only the one set asked for is built: the others may lack their inputs (no PLND, no SAE)
        sets, ctrl = (getattr(ctx, name) for name in _EXPERTS[experts])
        return Arm([item(sets)], [item(ctrl)])
    return build


def _arithmetic(ctx, source, target, s, layer):
    def items(sets):
        out = []
        if sets.neurons.get(source):  # a source with no neurons has nothing to switch off
            out.append(Intervention(sets, ZERO.name, language=source))
        out.append(Intervention(sets, ADD.name, factor=s, stats=ctx.stats, statistic="mean", language=target))
        return out
    return Arm(items(ctx.lape), items(ctx.lape_random))


def _direction(kind: str):
    def build(ctx, source, target, s, layer):
        d: DiffMean = ctx.direction(kind, target, layer).with_beta(s)
        return Arm([d], [random_direction_like(d, ctx.seed)])
    return build


def _prompting(phrasing: str):
    return lambda ctx, source, target, s, layer: Arm(instruction=instruction(target, phrasing, source))


register_method(SteerMethod("none", "none", lambda ctx, source, target, s, layer: Arm(),
                            description="no intervention"))
register_method(SteerMethod("prompt-english", "prompting", _prompting("english"),
                            description="'Continue in <language>:' in English before the prompt"))
register_method(SteerMethod("prompt-target", "prompting", _prompting("target"),
                            description="the same instruction in the target language"))
register_method(SteerMethod("prompt-source", "prompting", _prompting("source"), per_source=True,
                            description="the same instruction in the prompt's language"))
register_method(SteerMethod("neurons-set", "neurons", _neurons(SET, "mean"), (4.0, 8.0, 16.0),
                            controlled=True, needs=("lape", "stats"), description="LAPE neurons := s × their target mean"))
register_method(SteerMethod("neurons-scale", "neurons", _neurons(SCALE), (2.0, 4.0, 8.0),
                            controlled=True, needs=("lape",), description="LAPE neurons := s × themselves"))
register_method(SteerMethod("neurons-add", "neurons", _neurons(ADD, "mean"), (4.0, 8.0, 16.0),
                            controlled=True, needs=("lape", "stats"), description="LAPE neurons += s × their target mean"))
register_method(SteerMethod("arithmetic", "neurons", _arithmetic, (1.0, 4.0, 16.0), per_source=True,
                            controlled=True, needs=("lape", "stats"),
                            description="source's LAPE neurons := 0, target's += s × their mean (Gurgurov 2025)"))
register_method(SteerMethod("ap-median", "neurons", _neurons(SET, "median", experts="ap"), (1.0, 2.0, 4.0),
                            controlled=True, needs=("ap", "stats"),
                            description="AP experts := s × median of their target sentence means (Kojima 2024)"))
register_method(SteerMethod("plnd-add", "neurons", _neurons(ADD, "mean", experts="plnd"), (4.0, 8.0, 16.0),
                            controlled=True, needs=("plnd", "stats"),
                            description="PLND neurons += s × their target mean (Zhao 2024's set)"))
register_method(SteerMethod("sae-add", "sae", _neurons(ADD, "mean", experts="sae"), (0.25, 0.5, 1.0, 2.0),
                            controlled=True, needs=("sae",),
                            description="SAE-LAPE features += s × their target mean (decoded into the residual)"))
for _kind, _what in (("diffmean", "difference of means"), ("probe", "logistic-probe weight"),
                     ("pca", "most separating principal component"), ("lda", "Fisher discriminant")):
    register_method(SteerMethod(_kind, "directions", _direction(_kind), (1.0, 2.0, 4.0), uses_layer=True, controlled=True,
                                needs=("residuals",), description=f"+ s × the {_what} direction after a block"))
