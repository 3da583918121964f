"""Tang et al.'s deactivation matrix: NLL per language, with each language's neurons switched off
and under the random control, and the numbers that summarise it (methods page:
[the perplexity matrix](methods.md#perplexity-matrix))."""

import math

import pandas as pd

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..identify import random_like
from ..intervene import Intervention, as_items, check_positions
from ..intervene.modes import ZERO
from .._io import texts_hash
from ..identity import weights_hash
from ..progress import stage
from ..resume import content_hash, open_store, run_unit
from ..tokens import Batch, max_length, prepare_batches, tokenizer_of
from .conditions import check_control, check_neurons
from .scoring import nll_sums

def _nll_batches(model, texts: dict[str, list[str]], languages: list[str], batch_size: int,
                 max_sentences: int | None) -> list[Batch]:
    return prepare_batches(tokenizer_of(model), {k: texts[k] for k in languages}, batch_size, max_length(model),
                           max_sentences).batches


def _nll_frame(languages: list[str], sums, counts) -> pd.DataFrame:
    rows = []
    for k, lang in enumerate(languages):
        n = int(counts[k])
        nll = float(sums[k] / counts[k]) if n else math.nan
        rows.append({"language": lang, "nll": nll, "ppl": math.exp(nll) if n else math.nan, "n_tokens": n})
    return pd.DataFrame(rows)


def nll_per_language(model, corpus, languages: list[str] | None = None, batch_size: int = 16,
                     max_sentences: int | None = None, interventions=None, positions="all",
                     progress: bool = True) -> pd.DataFrame:
    """Mean NLL per token (nats) and perplexity of each language's text.

    Args:
        corpus: a :class:`Corpus` or ``{language: [sentences]}``; one sentence per sequence, BOS
            prepended; the targets are tokens 1..n of each sentence (what :func:`record` counts).
        languages: which languages (default: all in the corpus).
        max_sentences: the first N sentences of each language.
        interventions: ``None`` (clean), or an :class:`Intervention` / :class:`DiffMean` / a list
            of them, applied with :func:`intervene` around every forward pass.
        positions: the interventions' default positions: ``all`` or a list of absolute positions
            (``prompt``/``generated``/``last`` are refused: rows are right-padded to different lengths).

    Returns:
        one row per language: ``language, nll, ppl, n_tokens``.
    """
    texts = _checks.texts_of(corpus)
    languages = _checks.languages(languages, list(texts), "the corpus")
    batch_size = _checks.positive_int("batch_size", batch_size)
    max_sentences = _checks.positive_int("max_sentences", max_sentences, allow_none=True)
    items = as_items(interventions)
    positions = check_positions(positions)
    if isinstance(positions, str) and positions != "all":
        # right-padded rows of different lengths: 'last', 'prompt' and 'generated' would name a
        # different (often padded) position in each row
        raise LangNeuronsError(f"nll_per_language runs right-padded batches, where positions={positions!r} is "
                               "not the same position in every row; use 'all' or a list of absolute positions")
    batches = _nll_batches(model, texts, languages, batch_size, max_sentences)
    sums, counts = nll_sums(model, batches, len(languages), items, positions, "nll", progress)
    return _nll_frame(languages, sums, counts)


def perplexity_matrix(model, corpus, neurons, languages: list[str] | None = None,
                      control: str | None = "random", seed: int = 0, batch_size: int = 16,
                      max_sentences: int | None = None, ablated: list[str] | None = None,
                      progress: bool = True, checkpoint=None) -> pd.DataFrame:
    """Tang et al.'s deactivation matrix: NLL of every evaluated language with each language's neurons zeroed.

    Args:
        corpus: held-out text (e.g. ``load_corpus("builtin", split="eval")``).
        neurons: a :class:`LanguageNeurons` set; language *i*'s neurons are set to 0 (``mode="zero"``)
            at the set's site, at every position.
        languages: the evaluated languages (default: the set's languages that the corpus has).
        control: ``"random"`` — also ablate :func:`~.identify.random_like` neurons (same count per
            layer) of each ablated language; ``None`` — no control.
        seed: the random control's seed.
        ablated: whose neurons are switched off (default: ``languages``, those of them in the set).
        checkpoint: a :class:`~.resume.Checkpointed` store: each condition x ablated language is a
            unit of work, so a killed run resumes from the last one completed (and equals the
            uninterrupted run bit for bit).

    Returns:
        one row per ablated × evaluated language × condition (``baseline``, ``intervention``,
        ``control``): ``ablated, evaluated, condition, nll, ppl, n_tokens, n_neurons``. All three
        conditions use exactly the same tokens; the baseline is computed once per evaluated
        language and repeated in every row.
    """
    neurons = check_neurons(neurons)
    check_control(control)
    texts = _checks.texts_of(corpus)
    if languages is None:
        languages = [k for k in neurons.languages if k in texts]
        if not languages:
            raise LangNeuronsError(f"none of the neuron set's languages ({choices(neurons.languages)}) is in the "
                                   f"corpus ({choices(texts)}); name the evaluated languages with languages=")
    languages = _checks.languages(languages, list(texts), "the corpus")
    if ablated is None:
        ablated = [k for k in languages if k in neurons]
        if not ablated:
            raise LangNeuronsError(f"none of the evaluated languages is in the neuron set; available: "
                                   f"{choices(neurons.languages)}")
    ablated = _checks.languages(ablated, neurons.languages, "the neuron set")
    batch_size = _checks.positive_int("batch_size", batch_size)
    max_sentences = _checks.positive_int("max_sentences", max_sentences, allow_none=True)
    ctrl = random_like(neurons.select(ablated), seed) if control == "random" else None

    batches = _nll_batches(model, texts, languages, batch_size, max_sentences)
    store = open_store(checkpoint, "perplexity_matrix", {
        "model": weights_hash(model), "corpus": texts_hash({k: texts[k][:max_sentences] for k in languages}),
        "neurons": content_hash(neurons), "languages": languages, "ablated": ablated, "control": control,
        "seed": seed, "batch_size": batch_size, "max_sentences": max_sentences})
    if store is not None:
        conditions = ("intervention", "control") if ctrl is not None else ("intervention",)
        store.announce(["baseline"] + [f"{c} {a}" for a in ablated for c in conditions])
    # one bar over every pass: the baseline, then each ablated language (and its control)
    passes = 1 + len(ablated) * (2 if ctrl is not None else 1)
    with stage("ppl matrix", passes * len(batches), "batch", progress) as bar:
        return _matrix(model, neurons, ctrl, batches, languages, ablated, progress, store, bar)


def _matrix(model, neurons, ctrl, batches, languages, ablated, progress, store, bar) -> pd.DataFrame:
    K = len(languages)

    def frame(unit: str, items: list, desc: str) -> pd.DataFrame:
        """One pass, a unit of work: read back where a resumed run has it (its batches counted done)."""
        if store is not None and unit in store:
            bar.advance(len(batches))

        def compute():
            sums, counts = nll_sums(model, batches, K, items, "all", desc, progress)
            return {}, {"sums": sums, "counts": counts}
        _, t = run_unit(store, unit, compute, tensors=True)
        return _nll_frame(languages, t["sums"], t["counts"])

    base = frame("baseline", [], "ppl baseline")
    rows = []
    for a in ablated:
        n_neurons = len(neurons.neurons[a])
        conds = {"intervention": frame(f"intervention {a}", [Intervention(neurons, ZERO.name, language=a)],
                                       f"ppl −{a}")}
        if ctrl is not None:
            conds["control"] = frame(f"control {a}", [Intervention(ctrl, ZERO.name, language=a)], f"ppl −{a} control")
        for cond, frame_ in (("baseline", base), *conds.items()):
            for r in frame_.itertuples(index=False):
                rows.append({"ablated": a, "evaluated": r.language, "condition": cond, "nll": r.nll, "ppl": r.ppl,
                             "n_tokens": r.n_tokens, "n_neurons": n_neurons})
    return pd.DataFrame(rows, columns=["ablated", "evaluated", "condition", "nll", "ppl", "n_tokens", "n_neurons"])


def ratio(num: float, den: float) -> float:
    """``num / den`` for a positive denominator; ``inf`` when only the numerator is positive, else nan."""
    if not (math.isfinite(num) and math.isfinite(den)):
        return math.nan
    if den > 0:
        return num / den
    return math.inf if num > 0 else math.nan


def delta_matrix(df: pd.DataFrame, condition: str = "intervention") -> pd.DataFrame:
    """ΔNLL = NLL(condition) − NLL(baseline) as an ablated × evaluated matrix (from :func:`perplexity_matrix`)."""
    missing = {"ablated", "evaluated", "condition", "nll"} - set(df.columns)
    if missing:
        raise LangNeuronsError(f"not a perplexity-matrix frame: it lacks the column(s) {choices(sorted(missing))}")
    if condition not in set(df["condition"]):
        raise LangNeuronsError(f"the frame has no rows of condition {condition!r}; it has: "
                               f"{choices(sorted(set(df['condition'])))}")
    pivot = lambda c: df[df["condition"] == c].pivot(index="ablated", columns="evaluated", values="nll")  # noqa: E731
    cond, base = pivot(condition), pivot("baseline")
    rows = list(dict.fromkeys(df["ablated"]))
    cols = list(dict.fromkeys(df["evaluated"]))
    return (cond - base).loc[rows, cols]


def per_language(df: pd.DataFrame) -> dict[str, dict]:
    """Per ablated language: its own ΔNLL (the diagonal), the mean ΔNLL of the other evaluated
    languages, the random control's ΔNLL on the language, both ratios, and ``most_hurt``: whether
    its own ΔNLL is strictly the largest of its row (the one definition, used by the summary, the
    writers and the report). Languages ablated but not evaluated have no diagonal (nan, None)."""
    delta = delta_matrix(df, "intervention")
    ctrl = delta_matrix(df, "control") if "control" in set(df["condition"]) else None
    base = df[df["condition"] == "baseline"].drop_duplicates("evaluated").set_index("evaluated")["nll"]
    n_neurons = (df.drop_duplicates("ablated").set_index("ablated")["n_neurons"]
                 if "n_neurons" in df.columns else None)
    out = {}
    for a in delta.index:
        own = float(delta.loc[a, a]) if a in delta.columns else math.nan
        others = [float(delta.loc[a, e]) for e in delta.columns if e != a]
        off = _mean(others)
        c_own = float(ctrl.loc[a, a]) if ctrl is not None and a in ctrl.columns else math.nan
        out[str(a)] = {
            "n_neurons": int(n_neurons[a]) if n_neurons is not None else None,
            "baseline_nll": float(base[a]) if a in base.index else None,
            "delta_nll": own,
            "offdiag_delta_nll": off,
            "control_delta_nll": c_own,
            "diag_over_offdiag": ratio(own, off),
            "diag_over_control": ratio(own, c_own),
            "most_hurt": (not others or own > max(others)) if math.isfinite(own) else None,
        }
    return out


def _mean(xs) -> float:
    """The mean of the values that are not NaN (nan if none is)."""
    xs = [float(x) for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def perplexity_summary(df: pd.DataFrame) -> dict:
    """The headline numbers of a perplexity matrix.

    Returns a dict with
      * ``diag_delta_nll`` — mean ΔNLL of the ablated language on itself (the diagonal);
      * ``offdiag_delta_nll`` — mean ΔNLL of the other languages (off-diagonal cells);
      * ``control_diag_delta_nll`` / ``control_offdiag_delta_nll`` — the same for the random control;
      * ``diag_over_offdiag`` and ``diag_over_control`` — the ratios (``inf`` if only the numerator
        is positive, ``nan`` if neither is);
      * ``frac_most_hurt`` — the fraction of ablated languages (that are also evaluated) whose own
        ΔNLL is strictly the largest of their row;
      * ``n_ablated``, ``n_evaluated``.
    Diagonal cells exist only for ablated languages that are also evaluated.
    """
    delta = delta_matrix(df, "intervention")
    has_control = "control" in set(df["condition"])
    ctrl = delta_matrix(df, "control") if has_control else None

    def split(m: pd.DataFrame) -> tuple[list[float], list[float]]:
        diag, off = [], []
        for a in m.index:
            for e in m.columns:
                (diag if a == e else off).append(float(m.loc[a, e]))
        return diag, off

    mean = lambda xs: float(sum(xs) / len(xs)) if xs else math.nan  # noqa: E731
    diag, off = split(delta)
    out = {"diag_delta_nll": mean(diag), "offdiag_delta_nll": mean(off)}
    if ctrl is not None:
        cdiag, coff = split(ctrl)
        out.update(control_diag_delta_nll=mean(cdiag), control_offdiag_delta_nll=mean(coff))
    else:
        out.update(control_diag_delta_nll=math.nan, control_offdiag_delta_nll=math.nan)
    out["diag_over_offdiag"] = ratio(out["diag_delta_nll"], out["offdiag_delta_nll"])
    out["diag_over_control"] = ratio(out["diag_delta_nll"], out["control_diag_delta_nll"])
    hurt = [r["most_hurt"] for r in per_language(df).values() if r["most_hurt"] is not None]
    out["frac_most_hurt"] = mean([float(h) for h in hurt])
    out["n_ablated"], out["n_evaluated"] = int(len(delta.index)), int(len(delta.columns))
    return out

