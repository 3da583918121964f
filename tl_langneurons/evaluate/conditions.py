"""The conditions every measurement runs under — baseline, intervention, random control — and
the checks of what defines them."""

from contextlib import contextmanager

from ..errors import LangNeuronsError, choices
from ..intervene import intervene
from ..neurons import LanguageNeurons

CONDITIONS = ("baseline", "intervention", "control")
CONTROLS = ("random", None)


def check_neurons(neurons) -> LanguageNeurons:
    if not isinstance(neurons, LanguageNeurons):
        raise LangNeuronsError(f"neurons must be a LanguageNeurons set (it carries the site and the layer "
                               f"profile the random control copies), got {type(neurons).__name__}")
    return neurons


def check_control(control) -> None:
    if control not in CONTROLS:
        raise LangNeuronsError(f"unknown control {control!r}; allowed: {choices(CONTROLS)}")


@contextmanager
def under(model, items, positions="all"):
    """``intervene`` for a non-empty list of items, else nothing; yields the handle or ``None``."""
    if not items:
        yield None
    else:
        with intervene(model, list(items), positions=positions) as handle:
            yield handle

