"""What lm-eval 0.4.13's task code imports from transformers but transformers 5 no longer has.

XQuAD's ``utils.py`` (``lm_eval/tasks/xquad/utils.py``) scores answers with
``transformers.data.metrics.squad_metrics.compute_f1`` / ``compute_exact``; transformers 5 removed
``transformers.data.metrics``, so under transformers 5 the task cannot even be loaded
(``ModuleNotFoundError`` when lm-eval resolves ``!function utils.process_results_qa``).

:func:`install_squad_metrics` registers that module, only when the import fails, holding the same
functions as transformers 4's (the official SQuAD v2.0 evaluation script's answer normalisation,
exact match and token F1). Nothing else of transformers is touched; an installed transformers that
still has the module is used as it is.
"""

import collections
import importlib
import re
import string
import sys
import types

_MODULE = "transformers.data.metrics.squad_metrics"


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the and extra whitespace (SQuAD's rule)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float | int:  # int where transformers 4 returns one
    gold, pred = get_tokens(a_gold), get_tokens(a_pred)
    if not gold or not pred:  # an empty answer scores 1 against an empty gold, else 0
        return int(gold == pred)
    same = sum((collections.Counter(gold) & collections.Counter(pred)).values())
    if same == 0:
        return 0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def install_squad_metrics() -> bool:
    """Make ``transformers.data.metrics.squad_metrics`` importable; True if this installed it."""
    try:
        importlib.import_module(_MODULE)
        return False
    except ModuleNotFoundError:
        pass
    import transformers.data

    parent = sys.modules.get("transformers.data.metrics")
    if parent is None:
        parent = types.ModuleType("transformers.data.metrics")
        parent.__path__ = []  # a package, so that the submodule import resolves
        sys.modules["transformers.data.metrics"] = parent
        transformers.data.metrics = parent
    mod = types.ModuleType(_MODULE, "SQuAD answer metrics (tl_langneurons.tasks.compat, as in transformers 4)")
    for f in (normalize_answer, get_tokens, compute_exact, compute_f1):
        setattr(mod, f.__name__, f)
    sys.modules[_MODULE] = mod
    parent.squad_metrics = mod
    return True
