"""Which identification method finds the neurons that matter: LAPE, AP experts, activation
thresholds and PLND, each language's set at the SAME size, compared by overlap and by the effect of
switching them off (Tang et al.'s perplexity matrix, same held-out tokens, random control beside).

Equal-size sets (``n`` neurons per language, every method):

* ``lape`` — LAPE's ranking (Tang et al. 2024): eligible neurons (``max_k p > τ``) whose ``p`` for
  the language exceeds the activation bar, by entropy ascending (ties: lower flat index), first ``n``;
* ``ap`` — Kojima et al.'s experts with ``n`` units: ``n/2`` of highest and ``n/2`` of lowest AP;
* ``threshold`` — the ``n`` neurons of highest activation probability (Mondal et al.'s top-m);
* ``plnd`` — :func:`~tl_langneurons.identify.plnd` with ``top_n = n``.

A language with fewer than ``n`` candidates under a method (LAPE) gets fewer; the tables say how many.
"""

import numpy as np
import pandas as pd

from . import _checks
from .errors import LangNeuronsError, choices
from .identify import ap_experts_all, lape_entropy, plnd, threshold
from .intervene.modes import ZERO
from .neurons import LanguageNeurons
from .stats import NeuronStats

METHODS = ("lape", "ap", "threshold", "plnd")


def _lape_top(stats: NeuronStats, n: int, languages: list[str]) -> LanguageNeurons:
    ent = lape_entropy(stats)
    H = ent.ranked.reshape(-1).double().numpy()
    p = stats.activation_probability().reshape(len(stats.languages), -1).double().numpy()
    L, I = stats.n_layers, stats.d_mlp
    out = {}
    for lang in languages:
        cand = np.flatnonzero(np.isfinite(H) & (p[stats.index(lang)] > ent.activation_bar))
        order = cand[np.lexsort((cand, H[cand]))][:n]
        out[lang] = [(int(f // I), int(f % I)) for f in order]
    params = {"n": n, "tau": ent.tau, "activation_bar": ent.activation_bar, "ranking": "entropy within language"}
    return LanguageNeurons(out, "lape", params, stats.site, stats.model, L, I)


def equal_size_sets(stats: NeuronStats, n: int, languages: list[str] | None = None,
                    methods: list[str] | None = None, ap_positive: int = 500, ap_negative: int = 2500
                    ) -> dict[str, LanguageNeurons]:
    """Each method's ``n`` neurons per language (module docstring), from one recording.

    ``ap`` needs ``sentence_means``, ``plnd`` needs ``plnd=True`` statistics; ``ap_positive`` /
    ``ap_negative`` are Kojima's sentence counts (500 / 2,500; fewer are used where fewer exist).
    """
    languages = _checks.languages(languages, stats.languages, "the statistics")
    methods = list(METHODS) if methods is None else [_checks.one_of("method", m, METHODS) for m in methods]
    n = _checks.integer("n", n, 2, stats.n_layers * stats.d_mlp, even=True)
    out = {}
    for m in methods:
        if m == "lape":
            out[m] = _lape_top(stats, n, languages)
        elif m == "ap":
            out[m] = ap_experts_all(stats, languages, n=n, n_positive=ap_positive, n_negative=ap_negative)
        elif m == "threshold":
            out[m] = threshold(stats, top_m=n).select(languages)
        else:
            out[m] = plnd(stats, top_n=n).select(languages)
    return out


def _flat(sets: LanguageNeurons, lang: str) -> set[int]:
    return {l * sets.d_mlp + j for l, j in sets.neurons.get(lang, [])}


def overlap_between_methods(sets: dict[str, LanguageNeurons]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise overlap of the methods' sets: per language (``language, method_a, method_b, n_a, n_b,
    intersection, jaccard``) and per language and layer (``…, layer, …``)."""
    names = list(sets)
    if len(names) < 2:
        raise LangNeuronsError(f"overlap needs at least two methods, got {choices(names)}")
    first = sets[names[0]]
    rows, layer_rows = [], []
    for lang in first.languages:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                A, B = _flat(sets[a], lang), _flat(sets[b], lang)
                inter, union = len(A & B), len(A | B)
                rows.append({"language": lang, "method_a": a, "method_b": b, "n_a": len(A), "n_b": len(B),
                             "intersection": inter, "jaccard": inter / union if union else np.nan})
                for layer in range(first.n_layers):
                    lo, hi = layer * first.d_mlp, (layer + 1) * first.d_mlp
                    a_l = {x for x in A if lo <= x < hi}
                    b_l = {x for x in B if lo <= x < hi}
                    u = len(a_l | b_l)
                    layer_rows.append({"language": lang, "layer": layer, "method_a": a, "method_b": b,
                                       "n_a": len(a_l), "n_b": len(b_l), "intersection": len(a_l & b_l),
                                       "jaccard": len(a_l & b_l) / u if u else np.nan})
    return pd.DataFrame(rows), pd.DataFrame(layer_rows)


def effect_of_methods(model, corpus, sets: dict[str, LanguageNeurons], languages: list[str] | None = None,
                      control: str | None = "random", seed: int = 0, batch_size: int = 16,
                      max_sentences: int | None = None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each method's perplexity matrix (:func:`~tl_langneurons.evaluate.perplexity_matrix`, the same
    held-out tokens for every method), and one row per method × ablated language: ``n_neurons``,
    the own-language ΔNLL, ΔNLL per switched-off neuron, the other languages' mean ΔNLL, the random
    control's own ΔNLL (and per neuron), and whether the own language is the most hurt."""
    from .evaluate.perplexity import per_language, perplexity_matrix

    frames, rows = [], []
    for m, nset in sets.items():
        df = perplexity_matrix(model, corpus, nset, languages, control=control, seed=seed, batch_size=batch_size,
                               max_sentences=max_sentences, progress=progress)
        frames.append(df.assign(method=m))
        for lang, r in per_language(df).items():
            k = r["n_neurons"] or 0
            rows.append({"method": m, "language": lang, "n_neurons": k, "delta_nll": r["delta_nll"],
                         "delta_nll_per_neuron": r["delta_nll"] / k if k else np.nan,
                         "offdiag_delta_nll": r["offdiag_delta_nll"], "control_delta_nll": r["control_delta_nll"],
                         "control_delta_nll_per_neuron": r["control_delta_nll"] / k if k else np.nan,
                         "diag_over_offdiag": r["diag_over_offdiag"], "most_hurt": r["most_hurt"]})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def method_summary(effect: pd.DataFrame, overlap: pd.DataFrame) -> pd.DataFrame:
    """The one table: per method, means over languages of the effect columns, and its mean Jaccard
    with each other method."""
    cols = ["n_neurons", "delta_nll", "delta_nll_per_neuron", "offdiag_delta_nll", "control_delta_nll",
            "control_delta_nll_per_neuron"] + (["cloze_delta_acc"] if "cloze_delta_acc" in effect.columns else [])
    table = effect.groupby("method", sort=False)[cols].mean()
    table["frac_most_hurt"] = effect.groupby("method", sort=False)["most_hurt"].apply(
        lambda s: float(np.mean([bool(x) for x in s if x is not None])) if s.notna().any() else np.nan)
    for other in table.index:
        jac = []
        for m in table.index:
            sel = overlap[((overlap.method_a == m) & (overlap.method_b == other))
                          | ((overlap.method_a == other) & (overlap.method_b == m))]
            jac.append(float(sel["jaccard"].mean()) if len(sel) else (1.0 if m == other else np.nan))
        table[f"jaccard_{other}"] = jac
    return table.reset_index()


def cloze_change(model, sets: dict[str, LanguageNeurons], languages: list[str], limit: int | None = None,
                 batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """The own-language change of the built-in cloze task (``tlln_cloze_<lang>``, accuracy) when a
    language's neurons are switched off, per method: ``method, language, cloze_delta_acc``. Needs the
    ``[tasks]`` extra (lm-evaluation-harness)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LangNeuronsError("the cloze change needs lm-evaluation-harness: pip install -e '.[tasks]'") from None
    from .tasks import evaluate_tasks
    from .tasks.summary import change_matrix

    tasks = [f"tlln_cloze_{k}" for k in languages]
    rows = []
    for m, nset in sets.items():
        run = evaluate_tasks(model, tasks, neurons=nset, targets=languages, mode=ZERO.name, control=None, limit=limit,
                             batch_size=batch_size, progress=progress)
        change = change_matrix(run.frame, metric="acc")
        for lang in languages:
            rows.append({"method": m, "language": lang, "cloze_delta_acc": float(change.loc[f"tlln_cloze_{lang}", lang])})
    return pd.DataFrame(rows)
