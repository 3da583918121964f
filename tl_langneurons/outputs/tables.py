"""Write a neuron set's tables and figures into a folder.

What ``tl-langneurons analyze``, ``plot`` and ``demo`` write, and what the reproduction scripts in
``analyses/`` call: one place that turns a :class:`LanguageNeurons` (and, optionally, the
statistics it came from) into files, so that the command line stays thin and every entry point
writes the same files under the same names. The numbers come from :mod:`.analysis`, the figures
from :mod:`.plot`; this module only chooses what to run and where to write it.

Tables (CSV, tidy: one row per measurement):

* ``counts.csv``, ``layer_distribution.csv``, ``shared_by_k.csv``, ``overlap.csv`` (every ordered
  pair of languages: counts, Jaccard, overlap coefficient);
* ``relatedness.csv``: the relatedness tests, one row each (within-vs-across-group difference and
  Mantel correlation, grouped by branch, by family and by script);
* with statistics, ``activation_probability.csv``: the mean activation probability of each
  language's neurons on each language's text (how selective the sets are).

``summary.json`` holds the headline numbers and every test's statistic and p-value.
"""

import os
from pathlib import Path

import pandas as pd
import torch

from .. import _checks, analysis
from .._io import jsonable, make_out_dir, write_csv, write_json
from ..errors import LangNeuronsError
from ..languages import LANGUAGES, normalize_code
from ..identity import compatible
from ..neurons import LanguageNeurons
from ..stats import NeuronStats

# Branch first: on Gemma 3 270M (22 languages, LAPE 1%) the within-branch test is the one that is
# significant, while family (Indo-European lumps 14 of the 22) and script are not (README).
GROUPINGS = ("branch", "family", "script")
FIGURES = ("layer_placement", "overlap_heatmap", "overlap_clustermap", "shared_by_k", "entropy_distribution")


def check_stats_match(neurons: LanguageNeurons, stats: NeuronStats) -> None:
    """Raise unless ``stats`` come from the model, site and shape ``neurons`` were identified on."""
    compatible(neurons.model, stats.model, "the neuron set", "the statistics")
    if stats.site != neurons.site:
        raise LangNeuronsError(f"the statistics and the neuron set come from different sites: {stats.site!r} and "
                               f"{neurons.site!r}")
    if (stats.n_layers, stats.d_mlp) != (neurons.n_layers, neurons.d_mlp):
        raise LangNeuronsError(f"the statistics are for {stats.n_layers} layers × {stats.d_mlp} neurons, the neuron "
                               f"set for {neurons.n_layers} × {neurons.d_mlp}")


def _check_neurons(neurons: LanguageNeurons) -> None:
    if not isinstance(neurons, LanguageNeurons):
        raise LangNeuronsError(f"expected a LanguageNeurons, got {type(neurons).__name__}")
    if not neurons.languages:
        raise LangNeuronsError("the neuron set holds no languages; nothing to analyse or plot")


# ---------------------------------------------------------------------------------------------
# Tables and summary


def _relatedness(neurons: LanguageNeurons, metric: str, n_permutations: int, seed: int
                 ) -> tuple[dict, pd.DataFrame]:
    """Both tests by branch, by family and by script (:data:`GROUPINGS`, in that order), on the
    languages that have metadata.

    A test that cannot run (fewer than 3 languages with neurons, a grouping with no related pair)
    is reported as ``{"skipped": reason}`` rather than failing the whole analysis.
    """
    known = [k for k in neurons.languages if normalize_code(k) in LANGUAGES]
    unknown = [k for k in neurons.languages if k not in known]
    sub = neurons.select(known)
    out: dict = {"metric": metric, "n_permutations": n_permutations, "seed": seed,
                 "no_metadata": unknown, "tests": {}}
    rows = []
    for test in ("within_vs_across", "mantel_pearson"):
        out["tests"][test] = {}
        for by in GROUPINGS:
            try:
                if test == "within_vs_across":
                    r = analysis.relatedness_test(sub, by=by, metric=metric, n_permutations=n_permutations, seed=seed)
                else:
                    r = analysis.mantel_test(sub, by=by, metric=metric, method="pearson",
                                             n_permutations=n_permutations, seed=seed)
            except LangNeuronsError as e:
                out["tests"][test][by] = {"skipped": str(e)}
                continue
            out["tests"][test][by] = {
                "statistic": r.statistic, "p_value": r.p_value, "within_mean": r.within_mean,
                "across_mean": r.across_mean, "n_languages": r.n_languages, "n_pairs": r.n_pairs,
                "group_sizes": r.group_sizes, "excluded_empty": list(r.excluded),
            }
            rows.append(r.to_frame())
    cols = ["test", "by", "metric", "statistic", "p_value", "n_permutations", "n_languages", "n_pairs",
            "within_mean", "across_mean"]
    return out, (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols))


def activation_by_set(neurons: LanguageNeurons, stats: NeuronStats) -> pd.DataFrame:
    """Mean activation probability of each language's neurons on each language's text.

    Columns ``set_language, text_language, n_neurons, mean_p``: a selective set fires far more on
    its own language (``set_language == text_language``) than on the others. ``mean_p`` is NaN for
    an empty set.
    """
    p = stats.activation_probability().double()  # [K_text, L, I]
    rows = []
    for lang in neurons.languages:
        m = neurons.mask(lang)
        n = int(m.sum())
        means = p[:, m].mean(1).tolist() if n else [float("nan")] * len(stats.languages)
        rows += [{"set_language": lang, "text_language": t, "n_neurons": n, "mean_p": v}
                 for t, v in zip(stats.languages, means)]
    return pd.DataFrame(rows, columns=["set_language", "text_language", "n_neurons", "mean_p"])


def _selectivity(table: pd.DataFrame) -> dict:
    out = {}
    for lang, g in table.groupby("set_language", sort=False):
        own = g[g.text_language == lang].mean_p
        other = g[g.text_language != lang].mean_p
        out[lang] = {"p_own": float(own.iloc[0]) if len(own) else None,
                     "p_other_mean": float(other.mean()) if len(other) else None}
    return out


def _edge_layers(dist: pd.DataFrame, n_layers: int) -> dict:
    """Share of the pooled set in the first and last quarter of the layers (``n_layers // 4`` layers
    each, at least one: layer 0 and the last layer of a model with fewer than 8 layers)."""
    pooled = dist[dist.language == analysis.ALL].sort_values("layer")["count"].to_numpy()
    total = pooled.sum()
    q = max(1, n_layers // 4)
    share = (lambda x: float(x / total)) if total else (lambda x: None)
    return {"layers_per_quarter": q, "share_first_quarter": share(pooled[:q].sum()),
            "share_last_quarter": share(pooled[-q:].sum()), "peak_layer": int(pooled.argmax()) if total else None,
            "union_per_layer": pooled.tolist()}


def _top_pairs(pairs: pd.DataFrame, metric: str, n: int = 5) -> list[dict]:
    distinct = pairs[pairs.lang_a < pairs.lang_b].dropna(subset=[metric])
    top = distinct.sort_values([metric, "lang_a", "lang_b"], ascending=[False, True, True]).head(n)
    return [{"pair": f"{a}-{b}", metric: float(v)} for a, b, v in zip(top.lang_a, top.lang_b, top[metric])]


def write_analysis(neurons: LanguageNeurons, out: str | os.PathLike, stats: NeuronStats | None = None,
                   metric: str = "jaccard", n_permutations: int = 10000, seed: int = 0,
                   source: str | None = None) -> dict:
    """Write the CSV tables and ``summary.json`` into ``out``; return the summary.

    ``stats``, if given, must come from the same model and site (checked) and adds
    ``activation_probability.csv`` and a per-language selectivity to the summary. ``source`` is
    recorded in the summary as the path the neurons were read from.
    """
    _check_neurons(neurons)
    analysis.check_metric(metric)
    _checks.positive_int("n_permutations", n_permutations)
    if stats is not None:
        check_stats_match(neurons, stats)
    d = make_out_dir(out)

    counts = analysis.counts(neurons)
    dist = analysis.layer_distribution(neurons)
    shared = analysis.shared_by_k(neurons)
    pairs = analysis.overlap(neurons)
    relatedness, rel_table = _relatedness(neurons, metric, n_permutations, seed)
    files = [write_csv(counts, d / "counts.csv"), write_csv(dist, d / "layer_distribution.csv"),
             write_csv(shared, d / "shared_by_k.csv"), write_csv(pairs, d / "overlap.csv"),
             write_csv(rel_table, d / "relatedness.csv")]

    union = int(counts.n_neurons.iloc[-1])
    distinct = pairs[pairs.lang_a < pairs.lang_b][metric]
    summary = {
        "neurons": source,
        "method": neurons.method,
        "params": neurons.params,
        "site": neurons.site,
        "model": neurons.model.get("name"),
        "weights_hash": neurons.model.get("weights_hash"),
        "n_layers": neurons.n_layers,
        "d_mlp": neurons.d_mlp,
        "languages": neurons.languages,
        "counts": dict(zip(counts.language[:-1], counts.n_neurons[:-1].tolist())),
        "union": union,
        "union_share_of_model": float(counts.share_of_model.iloc[-1]),
        "share_shared_by_2_or_more": float(shared[shared.k >= 2].n_neurons.sum() / union) if union else None,
        "layers": _edge_layers(dist, neurons.n_layers),
        f"mean_{metric}_distinct_pairs": float(distinct.mean()) if distinct.notna().any() else None,
        f"top_{metric}_pairs": _top_pairs(pairs, metric),
        "relatedness": relatedness,
    }
    if stats is not None:
        act = activation_by_set(neurons, stats)
        files.append(write_csv(act, d / "activation_probability.csv"))
        summary["statistics"] = {"languages": stats.languages,
                                 "tokens": dict(zip(stats.languages, stats.n_tokens.long().tolist()))}
        summary["selectivity"] = _selectivity(act)
    summary["files"] = [p.name for p in files] + ["summary.json"]
    summary = jsonable(summary)
    write_json(d / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# Figures


def lape_entropy_for(neurons: LanguageNeurons, stats: NeuronStats) -> tuple[torch.Tensor, float | None, int | None]:
    """The per-neuron entropy to plot, the selection cutoff to mark, and K for the ``log K`` line.

    The method that made the set says (its registry entry's ``entropy_cutoff``,
    :mod:`..identify.methods`): for a LAPE set the entropy is computed with the set's own parameters
    and the cutoff is the entropy of the last neuron kept (the ``n_kept``-th smallest among eligible
    neurons); per-layer quotas have one cutoff per layer, so none is marked. For methods without
    one the entropy uses LAPE's defaults, with no cutoff.
    """
    from ..identify import lape_entropy
    from ..identify.methods import method_of

    method = method_of(neurons)
    kwargs, n_kept = method.entropy_cutoff(neurons.params) if method and method.entropy_cutoff else ({}, None)
    ent = lape_entropy(stats, **kwargs)
    cutoff = None
    if n_kept is not None:
        ranked = ent.ranked.flatten()
        if n_kept <= int(torch.isfinite(ranked).sum()):
            cutoff = float(ranked.kthvalue(n_kept).values)
    k = None if ent.normalized else len(stats.languages)
    return ent.ranked, cutoff, k


def write_figures(neurons: LanguageNeurons, out: str | os.PathLike, stats: NeuronStats | None = None,
                  metric: str = "jaccard") -> list[Path]:
    """Write every figure as PNG and PDF into ``out``; return the paths.

    Layer placement and shared-by-k always; the overlap heatmap and clustermap when there are at
    least two languages; the entropy distribution (with the selection cutoff) when ``stats`` are
    given (checked to come from the same model and site).
    """
    from . import plot  # matplotlib and seaborn: imported only when figures are drawn

    _check_neurons(neurons)
    analysis.check_metric(metric)
    if stats is not None:
        check_stats_match(neurons, stats)
    figs = {"layer_placement": lambda: plot.layer_placement(neurons),
            "shared_by_k": lambda: plot.shared_by_k(neurons)}
    if len(neurons.languages) >= 2:
        figs["overlap_heatmap"] = lambda: plot.overlap_heatmap(neurons, metric)
        figs["overlap_clustermap"] = lambda: plot.overlap_clustermap(neurons, metric)
    if stats is not None:
        def entropy():
            h, cutoff, k = lape_entropy_for(neurons, stats)
            return plot.entropy_distribution(h, threshold=cutoff, n_languages=k)
        figs["entropy_distribution"] = entropy
    d = make_out_dir(out)
    paths = []
    for name in FIGURES:
        if name in figs:
            paths.extend(plot.save_figure(figs[name](), d, name))
    return paths
