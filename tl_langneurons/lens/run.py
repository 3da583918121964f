"""The latent-language lens over the shipped items, optionally with a language's neurons switched off."""

from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..intervene.modes import ZERO
from ..tokens import encode, pad_id, right_pad, tokenizer_of
from .items import LensItem, build_items
from .readout import layer_log_probs, mean_interval

CONDITIONS = ("baseline", "own_neurons_off", "random_neurons_off")


@dataclass(frozen=True)
class LensResult:
    """``items``: one row per item × layer × condition (``p_target``, ``p_english``);
    ``summary``: one row per task × language × layer × condition with means and 95% intervals;
    ``counts``: items before and after the single-token filters, per task and language."""

    items: pd.DataFrame
    summary: pd.DataFrame
    counts: dict
    meta: dict = field(default_factory=dict)


def _probabilities(model, items: list[LensItem], batch_size: int, desc: str, progress: bool) -> list[torch.Tensor]:
    """``[n_items]`` of ``[layer, 2]``: summed probability of the target's and of English's variants."""
    tok = tokenizer_of(model)
    out = []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = items[start:start + batch_size]
        seqs = [encode(tok, it.prompt) for it in chunk]
        tokens, mask = right_pad(seqs, pad_id(tok))
        last = torch.tensor([len(s) - 1 for s in seqs])
        probs = layer_log_probs(model, tokens, mask, last).exp().cpu()  # [B, L+1, V]
        for b, it in enumerate(chunk):
            p_t = probs[b][:, list(it.target_ids)].sum(-1)
            p_e = probs[b][:, list(it.english_ids)].sum(-1)
            out.append(torch.stack([p_t, p_e], -1))
    return out


def run_lens(model, languages: list[str] | None = None, tasks: list[str] | None = None, *, neurons=None,
             control: str | None = "random", seed: int = 0, max_items: int | None = None, batch_size: int = 8,
             progress: bool = True) -> LensResult:
    """Wendler et al.'s latent-language lens (ACL 2024) on the shipped word set (:mod:`.items`).

    Args:
        model: a model from :func:`~tl_langneurons.load_model`.
        languages: target languages (default: all of the word set's but English).
        tasks: ``translation``, ``repetition``, ``cloze`` (default all).
        neurons: a :class:`~tl_langneurons.LanguageNeurons` set (optional): each target language's
            own neurons are then also switched off (``mode="zero"`` at the set's site, every
            position) — condition ``own_neurons_off`` — and, with ``control="random"``, the same
            number of random neurons per layer (``random_neurons_off``).
        seed: draws the few-shot examples and the random control.
        max_items: at most the first N surviving items per task and language.
        batch_size: prompts per forward pass.

    Returns:
        a :class:`LensResult`.
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    from ..evaluate.conditions import check_control, check_neurons

    check_control(control)
    items, counts = build_items(tokenizer_of(model), languages, tasks, seed, max_items)
    if not items:
        raise LangNeuronsError(f"no lens item survived the single-token filters for this model's tokenizer "
                               f"(counts: {counts}); try other languages")
    conditions: list[tuple[str, object]] = [("baseline", None)]
    if neurons is not None:
        from ..identify import random_like

        neurons = check_neurons(neurons)
        langs = [k for k in dict.fromkeys(it.language for it in items) if k in neurons.languages]
        if not langs:
            raise LangNeuronsError(f"none of the lens languages is in the neuron set; it has {choices(neurons.languages)}")
        conditions.append(("own_neurons_off", neurons))
        if control == "random":
            conditions.append(("random_neurons_off", random_like(neurons.select(langs), seed)))
    rows = []
    L1 = int(model.cfg.n_layers) + 1
    for cond, nset in conditions:
        by_lang: dict[str, list[LensItem]] = {}
        for it in items:
            if nset is None or it.language in nset.languages:
                by_lang.setdefault(it.language, []).append(it)
        for lang, its in by_lang.items():
            if nset is None:
                probs = _probabilities(model, its, batch_size, f"lens {lang}", progress)
            else:
                from ..intervene import Intervention, intervene

                with intervene(model, [Intervention(nset, ZERO.name, language=lang)]):
                    probs = _probabilities(model, its, batch_size, f"lens {lang} {cond}", progress)
            for i, (it, p) in enumerate(zip(its, probs)):
                for layer in range(L1):
                    rows.append({"condition": cond, "task": it.task, "language": it.language, "item": i,
                                 "target": it.target, "english": it.english, "layer": layer,
                                 "p_target": float(p[layer, 0]), "p_english": float(p[layer, 1])})
    frame = pd.DataFrame(rows)
    return LensResult(frame, summarize(frame), counts, {"n_layers": L1 - 1, "seed": seed, "max_items": max_items})


def summarize(items: pd.DataFrame) -> pd.DataFrame:
    """Means and normal-approximation 95% intervals per task × language × layer × condition."""
    out = []
    for (cond, task, lang, layer), g in items.groupby(["condition", "task", "language", "layer"], sort=False):
        t, e = mean_interval(list(g["p_target"])), mean_interval(list(g["p_english"]))
        out.append({"task": task, "language": lang, "layer": int(layer), "condition": cond, "n_items": len(g),
                    "p_target": t[0], "p_target_lo": t[1], "p_target_hi": t[2],
                    "p_english": e[0], "p_english_lo": e[1], "p_english_hi": e[2]})
    return pd.DataFrame(out)
