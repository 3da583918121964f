"""The commands that measure interventions: ppl, steer, diffmean, lss, tasks (methods page:
[evaluation](methods.md#evaluation))."""

import sys

from .done import finish
from ..errors import LangNeuronsError
from .args import (check_model_before_loading, checkpoint_store, config_shape, control, finite, json_object,
                   parse_floats, parse_languages, placement, positions_arg, positive, result_folder)


def _check_mode(mode: str, allowed, *, stats, factor, statistic: str):
    """``--mode`` (one of the registered modes ``allowed``) and the arguments it needs (given
    ``--stats``/``--factor``), checked before anything is loaded; the registry
    (:mod:`..intervene.modes`) says which."""
    from ..intervene.modes import get_mode

    m = get_mode(mode, allowed, "--mode")
    if "factor" in m.required and factor is None:
        raise LangNeuronsError(f"--mode {mode} needs --factor")
    if m.needs_stats and stats is None:
        free = [n for n in allowed if not get_mode(n).needs_stats]
        raise LangNeuronsError(f"--mode {mode} needs --stats (the recorded statistics whose {statistic} activation "
                               f"it writes); " + (f"--mode {', '.join(free)} need none" if free else "every mode does"))
    return m


def _steer_mode(args) -> str:
    """The steering mode and the statistics it needs, checked before anything is loaded."""
    from ..evaluate import DEFAULT_FACTOR, DEFAULT_MODE, DEFAULT_STATISTIC
    from ..intervene import check_statistic
    from ..intervene.modes import mode_names

    if args.statistic is not None:
        check_statistic(args.statistic)  # a misspelt statistic fails here, not after the model is loaded
    mode = args.mode if args.mode is not None else DEFAULT_MODE
    factor = args.factor if args.factor is not None else DEFAULT_FACTOR  # steering's factor has a default
    _check_mode(mode, mode_names(steers=True), stats=args.stats, factor=factor,
                statistic=args.statistic or DEFAULT_STATISTIC)
    return mode


def _measure_inputs(args, mode: str, targets: list[str]):
    """The neuron set and (for a mode that writes a statistic) its statistics, checked against each
    other, the targets and ``--model`` before the model is loaded."""
    from ..intervene.modes import get_mode
    from ..neurons import LanguageNeurons
    from ..outputs.tables import check_stats_match
    from ..stats import NeuronStats

    neurons = LanguageNeurons.load(args.neurons)
    check_model_before_loading(args.model, neurons.model, f"the neuron set {str(args.neurons)!r}")
    everyone = targets == ["all"]
    if everyone:
        targets = list(neurons.languages)
    for t in targets:
        if t not in neurons:
            raise LangNeuronsError(f"unknown --target {t!r}; the neuron set has: {', '.join(neurons.languages)}")
    empty = [t for t in targets if not neurons.neurons[t]]
    if empty and not everyone:
        raise LangNeuronsError(f"--target {','.join(empty)}: no neurons in {str(args.neurons)!r} (an intervention on "
                               f"them changes nothing); languages with neurons: {', '.join(_with_neurons(neurons))}")
    if empty:
        print(f"note: no neurons for {', '.join(empty)} in {args.neurons}: not measured", file=sys.stderr)
        targets = [t for t in targets if t not in empty]
        if not targets:
            raise LangNeuronsError(f"--target all: no language of {str(args.neurons)!r} has neurons")
    stats = None
    if args.stats is not None and "stats" in get_mode(mode).takes:
        stats = NeuronStats.load(args.stats)
        check_stats_match(neurons, stats)
        for t in targets:
            if t not in stats.languages:
                raise LangNeuronsError(f"--target {t!r} has no statistics in {args.stats!r}; "
                                       f"they hold: {', '.join(stats.languages)}")
        _check_statistic_recorded(args, stats)
    return neurons, stats, targets


def _with_neurons(neurons) -> list[str]:
    return [k for k in neurons.languages if neurons.neurons[k]] or ["none"]


def _check_statistic_recorded(args, stats) -> None:
    """The statistic set/add write is in the recorded statistics (else the run would fail at its
    first intervention, after the model is loaded)."""
    from ..evaluate import DEFAULT_STATISTIC
    from ..stats import SENTENCE_STATS

    statistic = args.statistic or DEFAULT_STATISTIC
    if statistic in SENTENCE_STATS and statistic != "mean" and stats.sentence_means is None:
        raise LangNeuronsError(f"--statistic {statistic} needs per-sentence means, which {args.stats!r} does not "
                               "hold: record with --sentence-means")
    if statistic.startswith("q") and stats.hist is None:
        raise LangNeuronsError(f"--statistic {statistic} needs histograms, which {args.stats!r} does not hold: "
                               "record with --histograms")


def _load_for(args, neurons):
    """The model at the neuron set's site; refused if the set was identified on other weights."""
    from ..models import compatible, load_model

    model = load_model(args.model, dtype=args.dtype, site=neurons.site, **placement(args))
    compatible(neurons.model, model, f"the neuron set {str(args.neurons)!r}", f"--model {args.model!r}")
    return model


def cmd_ppl(args) -> int:
    from ..sources import resolve_source
    from ..neurons import LanguageNeurons

    positive("--max-sentences", args.max_sentences)
    positive("--batch-size", args.batch_size)
    resolve_source(args.model)
    neurons = LanguageNeurons.load(args.neurons)
    check_model_before_loading(args.model, neurons.model, f"the neuron set {str(args.neurons)!r}")
    langs = parse_languages(args.languages)
    ablated = None
    if langs is not None:
        ablated = [k for k in langs if k in neurons and neurons.neurons[k]]
        if not ablated:
            raise LangNeuronsError(f"--languages {args.languages}: none has neurons in {str(args.neurons)!r}, so there "
                                   f"is nothing to switch off; languages with neurons: "
                                   f"{', '.join(_with_neurons(neurons))}")
    with result_folder(args) as rf:
        return _ppl(args, rf, neurons, langs, ablated)


def _ppl(args, rf, neurons, langs, ablated) -> int:
    from ..corpus import builtin_languages, load_corpus
    from ..evaluate import perplexity_matrix
    from ..outputs.measurements import write_ppl
    from ..models import weights_hash
    from .._io import texts_hash

    split = args.split
    to_load = langs  # without --languages: only the set's languages (the corpus may hold many more)
    if args.corpus == "builtin":
        # held-out text by default: the built-in model was trained on 'train', the neurons found on 'stats'
        split = "eval" if split is None else split
        if to_load is None:
            to_load = [k for k in neurons.languages if k in builtin_languages(split)] or None
    elif args.corpus.startswith("hf:") and to_load is None:
        to_load = list(neurons.languages)
    corpus = load_corpus(args.corpus, languages=to_load, split=split, max_sentences=args.max_sentences)
    if langs is not None and len(ablated) < len(langs):  # said once the languages are known good, before work
        print(f"note: no neurons for {', '.join(k for k in langs if k not in ablated)} in {args.neurons}: "
              "evaluated only (nothing to switch off)", file=sys.stderr)
    model = _load_for(args, neurons)
    store = checkpoint_store(args, rf, model=weights_hash(model), corpus=texts_hash(corpus.texts))
    df = perplexity_matrix(model, corpus, neurons, languages=langs, control=control(args.control), seed=args.seed,
                           batch_size=args.batch_size, progress=True, checkpoint=store)
    run = {"model": args.model, "corpus": args.corpus, "split": split, "max_sentences": args.max_sentences,
           "neurons": str(args.neurons), "site": neurons.site, "method": neurons.method,
           "control": control(args.control), "seed": args.seed}
    summary = write_ppl(df, rf.path, run=run)
    out = rf.commit()
    return _done(ppl_lines(summary), summary, out)


def _times(x) -> str:
    return "n/a" if x is None else f"x{x:.3g}"


def ppl_lines(s: dict) -> list[str]:
    """The perplexity matrix's headline numbers (``ppl`` and the demo)."""
    lines = [f"switching a language's neurons off changes its own NLL by {s['diag_delta_nll']:+.4f} nats/token, "
             f"the other languages' by {s['offdiag_delta_nll']:+.4f} ({_times(s['diag_over_offdiag'])})"]
    if s.get("control_diag_delta_nll") is not None:
        lines.append(f"as many random neurons per layer off: {s['control_diag_delta_nll']:+.4f} (a language's own "
                     f"neurons change its NLL {_times(s['diag_over_control'])} as much)")
    if s.get("frac_most_hurt") is not None:
        lines.append(f"it hurts that language more than any other for {s['frac_most_hurt']:.0%} of the "
                     f"{s['n_ablated']} languages switched off ({s['n_evaluated']} evaluated)")
    return lines


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _rates(mean: dict, control: str = "random control") -> str:
    fluent = f", fluent {_pct(mean['target_fluent_rate'])}" if "target_fluent_rate" in mean else ""
    return (f"{_pct(mean.get('target_rate'))}{fluent} (no intervention {_pct(mean.get('baseline_rate'))}, {control} "
            f"{_pct(mean.get('control_rate'))})")


def _done(lines: list[str], summary: dict, out) -> int:
    """Print a measurement's headline numbers, where its files went (every number is in
    summary.json) and the time taken."""
    return finish(lines, f"wrote {len(summary['files'])} files to {out} (every number: {out / 'summary.json'})")


def _generation_args(args):
    """Check the prompt and decoding options of steer/diffmean before anything is loaded; return
    ``(prompts, GenerationConfig)`` (prompts ``None``: the library's default prompts)."""
    from ..evaluate import GenerationConfig, read_prompts

    for name in ("--n-samples", "--n-prompts", "--max-new-tokens", "--batch-size", "--top-k"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.temperature is not None and not args.greedy and not args.temperature > 0:
        raise LangNeuronsError(f"--temperature must be > 0 when sampling (or use --greedy), got {args.temperature}")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise LangNeuronsError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if args.bos_only and args.prompts is not None:
        raise LangNeuronsError(f"give --bos-only or --prompts {args.prompts}, not both")
    # only the decoding options that were given: GenerationConfig's defaults apply to the rest
    given = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "repetition_penalty")
             if getattr(args, k) is not None}
    generation = GenerationConfig(greedy=args.greedy, **given)
    prompts = read_prompts(args.prompts) if args.prompts is not None else ([""] if args.bos_only else None)
    return prompts, generation


def _fluency(args, model, languages: list[str], generation):
    """The fluency criterion of steer/diffmean: thresholds from ``--fluency-sentences`` held-out
    built-in ``eval`` sentences of each of ``languages`` the built-in corpus has (a generation in
    another language is never counted fluent); ``True`` (NLL and repetition only) with 0."""
    from ..corpus import builtin_languages, load_corpus
    from ..evaluate import fluency_criterion

    n = args.fluency_sentences  # checked before the model was loaded
    if n == 0:
        return True
    langs = [k for k in languages if k in builtin_languages("eval")]
    if not langs:
        return True
    corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=n)
    return fluency_criterion(model, corpus, langs, n_tokens=generation.max_new_tokens, max_sentences=n)


def _check_fluency_sentences(args) -> int:
    n = args.fluency_sentences
    if n < 0:
        raise LangNeuronsError(f"--fluency-sentences must be 0 (no fluency thresholds) or a positive integer, got {n}")
    return n


def _fluency_run(fluency) -> dict:
    return {"fluency": fluency.as_dict() if not isinstance(fluency, bool) else None}


def _given_sampling(args) -> dict:
    """Only the prompt and batching options that were given: the library's defaults apply to the rest."""
    given = {k: getattr(args, k) for k in ("n_samples", "n_prompts", "batch_size") if getattr(args, k) is not None}
    if args.source is not None:
        given["source"] = parse_languages(args.source)
    return given


def _generation_run(args, given: dict, generation) -> dict:
    """What a steering run's summary.json records of its prompts and decoding."""
    return {"prompts": args.prompts or ("BOS only" if args.bos_only else "built-in parallel split"),
            "seed": args.seed, "control": control(args.control), **generation.as_dict(),
            **{k: v for k, v in given.items() if k != "positions"}}


def cmd_steer(args) -> int:
    from ..sources import resolve_source

    mode = _steer_mode(args)
    if args.factors is not None and args.factor is not None:
        raise LangNeuronsError(f"give --factor {args.factor:g} or --factors {args.factors}, not both")
    factors = parse_floats("--factors", args.factors) if args.factors is not None else None
    finite("--factor", args.factor)
    prompts, generation = _generation_args(args)
    positions = positions_arg(args.positions)
    resolve_source(args.model)
    with result_folder(args) as rf:
        return _steer(args, rf, mode, factors, prompts, generation, positions)


def _steer(args, rf, mode, factors, prompts, generation, positions) -> int:
    from ..evaluate import steer_sweep
    from ..models import weights_hash
    from ..outputs.measurements import write_steer

    targets = parse_languages(args.target) if args.target != "all" else ["all"]
    neurons, stats, targets = _measure_inputs(args, mode, targets)
    if factors is None:
        from ..evaluate import DEFAULT_FACTOR

        factors = [args.factor if args.factor is not None else DEFAULT_FACTOR]
    given = _given_sampling(args)
    if args.statistic is not None:
        given["statistic"] = args.statistic
    if positions is not None:
        given["positions"] = positions
    _check_fluency_sentences(args)
    model = _load_for(args, neurons)
    fluency = _fluency(args, model, list(neurons.languages), generation)
    store = checkpoint_store(args, rf, model=weights_hash(model))
    df = steer_sweep(model, neurons, targets, factors, [mode], prompts, stats, generation=generation, seed=args.seed,
                     control=control(args.control), fluency=fluency, progress=True, checkpoint=store, **given)
    run = {"model": args.model, "neurons": str(args.neurons), "stats": args.stats, "site": neurons.site,
           "method": neurons.method, "targets": targets, **_generation_run(args, given, generation),
           **_fluency_run(fluency)}
    summary = write_steer(df, rf.path, run=run)
    out = rf.commit()
    lines = [f"{c['mode']} x{c['factor']:g}: mean target-language rate {_rates(c['mean'])} over "
             f"{c['mean']['n_targets']} target(s)" for c in summary["cells"]]
    if summary["sweep"]:
        lines.append(f"best: {summary['settings']['mode']} x{summary['settings']['factor']:g}")
    lines += [f"  {t}: {_pct(r['target_rate'])} [{_pct(r['target_low'])}, {_pct(r['target_high'])}] of {r['n']}"
              + (f", fluent {_pct(r['target_fluent_rate'])}" if "target_fluent_rate" in r else "")
              + f"; no intervention {_pct(r.get('baseline_rate'))}, control {_pct(r.get('control_rate'))}"
              for t, r in summary["targets"].items()]
    return _done(lines, summary, out)


def cmd_diffmean(args) -> int:
    from ..sources import resolve_source

    betas = parse_floats("--betas", args.betas)
    positive("--max-sentences", args.max_sentences)
    prompts, generation = _generation_args(args)
    positions = positions_arg(args.positions)
    resolve_source(args.model)
    with result_folder(args) as rf:
        return _diffmean(args, rf, betas, prompts, generation, positions)


def _diffmean(args, rf, betas, prompts, generation, positions) -> int:
    from ..corpus import load_corpus
    from ..evaluate import diffmean_sweep
    from ..outputs.measurements import write_steer
    from ..models import load_model, weights_hash
    from .._io import texts_hash

    langs = parse_languages(args.languages)
    split = "stats" if args.corpus == "builtin" and args.split is None else args.split
    corpus = load_corpus(args.corpus, languages=langs, split=split, max_sentences=args.max_sentences)
    targets = parse_languages(args.target) if args.target != "all" else list(corpus.languages)
    for t in targets:
        if t not in corpus.languages:
            raise LangNeuronsError(f"unknown --target {t!r}; the corpus has: {', '.join(corpus.languages)}")
    _check_fluency_sentences(args)
    n_layers = config_shape(args.model).get("n_layers")
    if args.layer < 0 or n_layers is not None and args.layer >= n_layers:  # refused before loading, where known
        raise LangNeuronsError(f"--layer must be in [0, {n_layers if n_layers is not None else 'the layers'}), "
                               f"got {args.layer}")
    model = load_model(args.model, dtype=args.dtype, **placement(args))
    if not 0 <= args.layer < model.cfg.n_layers:
        raise LangNeuronsError(f"--layer must be in [0, {model.cfg.n_layers}), got {args.layer}")
    given = _given_sampling(args)
    if positions is not None:
        given["positions"] = positions
    fluency = _fluency(args, model, list(corpus.languages), generation)
    store = checkpoint_store(args, rf, model=weights_hash(model), corpus=texts_hash(corpus.texts))
    df = diffmean_sweep(model, corpus, targets, args.layer, betas, prompts, control=control(args.control),
                        generation=generation, seed=args.seed, fluency=fluency, progress=True, checkpoint=store,
                        **given)
    run = {"model": args.model, "method": "diffmean", "layer": args.layer, "corpus": args.corpus, "split": split,
           "max_sentences": args.max_sentences, "languages": list(corpus.languages), "targets": targets,
           **_generation_run(args, given, generation), **_fluency_run(fluency)}
    summary = write_steer(df, rf.path, run=run)
    out = rf.commit()
    lines = [f"diffmean beta {c['factor']:g} after block {args.layer}: mean target-language rate "
             f"{_rates(c['mean'], control='random direction')} over {c['mean']['n_targets']} target(s)"
             for c in summary["cells"]]
    return _done(lines, summary, out)


def cmd_lss(args) -> int:
    from ..evaluate import load_facts
    from ..sources import resolve_source

    mode = _steer_mode(args)
    finite("--factor", args.factor)
    positive("--batch-size", args.batch_size)
    positions = positions_arg(args.positions)
    if args.source == args.target:
        raise LangNeuronsError(f"--source and --target must differ, both are {args.source!r}")
    resolve_source(args.model)
    items = load_facts(args.facts, languages=[args.source, args.target])
    with result_folder(args) as rf:
        return _lss(args, rf, mode, positions, items)


def _lss(args, rf, mode, positions, items) -> int:
    from ..evaluate import lss
    from ..outputs.measurements import write_lss

    neurons, stats, _ = _measure_inputs(args, mode, [args.target])
    given = {k: getattr(args, k) for k in ("factor", "statistic", "batch_size") if getattr(args, k) is not None}
    if positions is not None:
        given["positions"] = positions
    model = _load_for(args, neurons)
    df = lss(model, neurons, items, args.source, args.target, stats=stats, mode=mode, control=control(args.control),
             seed=args.seed, progress=True, **given)
    run = {"model": args.model, "neurons": str(args.neurons), "stats": args.stats, "facts": args.facts or "bundled",
           "site": neurons.site, "method": neurons.method, "control": control(args.control), "seed": args.seed,
           **{k: v for k, v in given.items() if k != "positions"}}
    summary = write_lss(df, rf.path, run=run)
    out = rf.commit()
    lines = [f"LSS {p['source']}->{p['target']} ({p['mode']} x{p['factor']:g}, {cond}): {_pct(p[cond]['lss'])} "
             f"[{_pct(p[cond]['low'])}, {_pct(p[cond]['high'])}] of {p[cond]['n_items']} items, "
             f"mean shift of delta {p[cond]['mean_delta_shift']:+.3f}"
             for p in summary["pairs"] for cond in ("intervention", "control") if cond in p]
    return _done(lines, summary, out)




def _num(x) -> str:
    """A score or its stderr; lm-eval gives no stderr for one document (null in summary.json)."""
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _task_list(value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    if not tasks:
        raise LangNeuronsError(f"--tasks needs at least one lm-eval task name, got {value!r}")
    return tasks


def cmd_tasks(args) -> int:
    """lm-eval tasks without intervention, under each target's intervention and its control."""
    from ..sources import resolve_source

    tasks = _task_list(args.tasks)
    positive("--limit", args.limit)
    positive("--batch-size", args.batch_size)
    sources = json_object("--sources", args.sources, '{"xcopa_it": {"test": "xcopa_it.jsonl"}}') \
        if args.sources else None
    resolve_source(args.model)
    with result_folder(args) as rf:
        return _tasks(args, rf, tasks, sources)


def _tasks(args, rf, tasks, sources) -> int:
    from ..models import load_model, weights_hash
    from ..outputs.measurements import write_tasks
    from ..tasks import evaluate_tasks
    from ..tasks.registry import task_manager, task_specs

    neurons = stats = targets = None
    if args.neurons is not None:
        if args.target is None:
            raise LangNeuronsError("--neurons needs --target (whose neurons to intervene on; a list or 'all')")
        from ..intervene.modes import mode_names

        _check_mode(args.mode, mode_names(tasks=True), stats=args.stats, factor=args.factor, statistic=args.statistic)
        neurons, stats, targets = _measure_inputs(args, args.mode, [t.strip() for t in args.target.split(",")])
    elif args.target is not None:
        raise LangNeuronsError("--target needs --neurons (the neuron set whose target neurons are intervened on)")
    # task names, local data and few-shot settings checked before the model is loaded (the task
    # index is cached: evaluate_tasks reuses it)
    task_specs(tasks, task_manager(tasks, args.include_path), sources, args.num_fewshot)
    model = _load_for(args, neurons) if neurons is not None else load_model(args.model, dtype=args.dtype,
                                                                             **placement(args))
    run = evaluate_tasks(model, tasks, neurons, targets, args.mode, factor=args.factor, stats=stats,
                         statistic=args.statistic, control=control(args.control), seed=args.seed, limit=args.limit,
                         batch_size=args.batch_size, num_fewshot=args.num_fewshot, sources=sources,
                         include_path=args.include_path, metric=args.metric,
                         checkpoint=checkpoint_store(args, rf, model=weights_hash(model)))
    info = {"model": args.model, "tasks": tasks, "neurons": args.neurons, "targets": targets, "mode": args.mode,
            "factor": args.factor, "statistic": args.statistic, "control": control(args.control), "seed": args.seed,
            "limit": args.limit, "num_fewshot": args.num_fewshot, "positions": "all"}
    summary = write_tasks(run, rf.path, run=info, metric=args.metric)
    out = rf.commit()
    lines = [f"{t}: {b['metric']} {_num(b['value'])} ± {_num(b['stderr'])} (n={b['n']})"
             for t, b in summary["baseline"].items()]
    if summary.get("own_delta") is not None:
        ctrl = summary.get("control_own_delta")
        lines.append(f"own-language change {summary['own_delta']:+.3f} (other tasks {summary['other_delta']:+.3f}"
                     + (f", random control {ctrl:+.3f})" if ctrl is not None else ")"))
    return _done(lines, summary, out)
