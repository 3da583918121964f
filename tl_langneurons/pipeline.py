"""The whole pipeline as one function, on the built-in model and corpus (``tl-langneurons demo``):
record → LAPE → analysis and figures → perplexity matrix → neuron steering → diffmean steering →
the one-page report."""

import sys
from pathlib import Path

from . import _checks
from ._io import check_out_dir, write_json
from .corpus import builtin_languages, load_corpus
from .errors import LangNeuronsError
from .evaluate import DEFAULT_MODE, DEFAULT_STATISTIC, diffmean_sweep, perplexity_matrix, steer_sweep
from .identify import lape
from .models import load_model
from .outputs.measurements import write_ppl, write_steer
from .outputs.report import write_report
from .outputs.tables import write_analysis, write_figures
from .record import record

DEMO_LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th")
# LAPE with 5% instead of Tang's 1%: the built-in model has 6 x 1,792 neurons, and 1% leaves only a
# handful per language, too few to see where they sit or which languages share them.
DEMO_TOP_RATE = 0.05
DEMO_FACTORS = (8.0, 16.0, 32.0)  # the steering factor sweep
DEMO_DIFFMEAN_LAYER = 1  # after block 1 of 6 (blocks 1-4 all gave 96-99% at beta 2-8)
DEMO_BETAS = (1.0, 2.0, 4.0)


def recording_summary(stats) -> dict:
    """What a recording holds, in a few numbers (printed by ``record`` and the demo)."""
    p = stats.activation_probability()
    return {
        "languages": stats.languages,
        "site": stats.site,
        "model": stats.model.get("name"),
        "tokens": {k: int(n) for k, n in zip(stats.languages, stats.n_tokens.tolist())},
        "activation_probability_per_layer": [round(x, 4) for x in p.mean(dim=(0, 2)).tolist()],
    }


def selective_share(stats) -> list[float]:
    """Per layer, the share of neurons whose highest-p language has at least twice the activation
    probability of the next one (and fires on > 5% of its tokens): how language-selective a layer is."""
    top2 = stats.activation_probability().topk(2, dim=0).values
    selective = ((top2[0] > 2 * top2[1]) & (top2[0] > 0.05)).double().mean(dim=1)
    return [round(x, 4) for x in selective.tolist()]


def _step(i: int, n: int, text: str) -> None:
    print(f"[demo {i}/{n}] {text}", file=sys.stderr)


def run_demo(out="demo_out", languages=DEMO_LANGUAGES, max_sentences: int = 300, eval_sentences: int = 60,
             factors=DEMO_FACTORS, diffmean_layer: int = DEMO_DIFFMEAN_LAYER, betas=DEMO_BETAS,
             n_samples: int = 16) -> dict:
    """Run the pipeline into ``out`` and return its ``summary.json``; see the README for what it writes."""
    out = check_out_dir(out)
    langs = _checks.languages(list(languages), builtin_languages("stats"), "the built-in corpus")
    for name, v in (("max_sentences", max_sentences), ("eval_sentences", eval_sentences), ("n_samples", n_samples)):
        _checks.positive_int(name, v)
    factors, betas = _checks.numbers_list("factor", factors), _checks.numbers_list("beta", betas)
    steps = 6

    _step(1, steps, f"loading the built-in model; recording {len(langs)} languages of the built-in corpus "
          "('stats' split)")
    model = load_model("builtin")
    if not 0 <= diffmean_layer < model.cfg.n_layers:  # checked now, not after minutes of work
        raise LangNeuronsError(f"diffmean_layer must be in [0, {model.cfg.n_layers}), got {diffmean_layer}")
    corpus = load_corpus("builtin", languages=langs, split="stats", max_sentences=max_sentences)
    stats = record(model, corpus, site="act", batch_size=32)
    stats.save(out / "stats")
    summary = recording_summary(stats)
    summary["selective_share_per_layer"] = selective_share(stats)

    _step(2, steps, f"LAPE (top_rate {DEMO_TOP_RATE}), analysis and figures")
    neurons = lape(stats, top_rate=DEMO_TOP_RATE)
    neurons_path = neurons.save(out / "neurons.json")
    analysis = write_analysis(neurons, out / "analysis", stats, source=str(neurons_path))
    figures = write_figures(neurons, out / "figures", stats)
    summary["lape"] = {"top_rate": DEMO_TOP_RATE, "why": "the built-in model is small: 1% gives a handful of "
                       "neurons per language", "counts": analysis["counts"], "union": analysis["union"],
                       "relatedness": {f"{t}/{by}": {k: r.get(k) for k in ("statistic", "p_value", "skipped") if k in r}
                                       for t, g in analysis["relatedness"]["tests"].items() for by, r in g.items()}}
    found = [k for k in neurons.languages if len(neurons[k]) > 0]

    # Held-out text: the model was trained on 'train' and the neurons were found on 'stats'.
    _step(3, steps, "perplexity matrix on the 'eval' split: each language's neurons switched off, and as many "
          "random neurons per layer (control)")
    eval_corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=eval_sentences)
    # batches of 8: the built-in corpus's few long sentences pad a batch of 32 to 2x its tokens,
    # and on a CPU every padded token costs as much as a real one (8 is 2.5x faster than 32 here)
    ppl_df = perplexity_matrix(model, eval_corpus, neurons, languages=langs, control="random", seed=0,
                               batch_size=8, progress=True)
    ppl = write_ppl(ppl_df, out / "ppl", run={"model": "builtin", "corpus": "builtin", "split": "eval",
                                              "max_sentences": eval_sentences, "neurons": str(neurons_path),
                                              "control": "random", "seed": 0})

    _step(4, steps, f"steering every language: {DEFAULT_MODE} its neurons to x{','.join(f'{f:g}' for f in factors)} "
          f"the {DEFAULT_STATISTIC} activation, from BOS only, with and without the intervention and under the "
          "random control")
    steer_df = steer_sweep(model, neurons, found, factors, [DEFAULT_MODE], prompts=[""], stats=stats,
                           n_samples=n_samples, seed=0, progress=True)
    steer = write_steer(steer_df, out / "steer", run={"model": "builtin", "neurons": str(neurons_path),
                                                       "stats": str(out / "stats"), "targets": found,
                                                       "prompts": "BOS only", "seed": 0})
    # The baseline neuron steering must be compared with: a direction in the residual stream
    # (difference of the target's and the other languages' mean residual), read from the same text.
    _step(5, steps, f"the baseline: residual difference-of-means steering after block {diffmean_layer}, beta "
          f"{','.join(f'{b:g}' for b in betas)}, with a random direction of the same norm as control")
    dm_df = diffmean_sweep(model, corpus, found, diffmean_layer, betas, prompts=[""], n_samples=n_samples,
                           seed=0, progress=True)
    dm = write_steer(dm_df, out / "steer_diffmean", run={"model": "builtin", "method": "diffmean",
                                                         "layer": diffmean_layer, "corpus": "builtin stats",
                                                         "targets": found, "prompts": "BOS only", "seed": 0})
    summary["ppl"] = {k: ppl[k] for k in ("diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll",
                                          "diag_over_offdiag", "diag_over_control", "frac_most_hurt")}
    summary["steer"] = {"settings": steer.get("settings"), "mean": steer.get("mean")}
    summary["steer_diffmean"] = {"layer": diffmean_layer, "settings": dm.get("settings"), "mean": dm.get("mean")}
    write_json(out / "summary.json", summary)

    _step(6, steps, "report")
    report = write_report(out, title="Language-specific neurons of the built-in model")
    for what, where in (("statistics", out / "stats"), ("neurons", neurons_path),
                        ("tables and summary.json", out / "analysis"),
                        (f"{len(figures) // 2} figures (PNG + PDF)", out / "figures"),
                        ("perplexity matrix (ppl.csv, summary.json, ppl_change figure)", out / "ppl"),
                        ("steering generations (steer.csv, summary.json, rate-vs-factor figure)", out / "steer"),
                        ("the same for residual diffmean steering", out / "steer_diffmean"),
                        ("this summary", out / "summary.json"), ("the report", Path(report))):
        print(f"[demo] {what}: {where}", file=sys.stderr)
    return summary
