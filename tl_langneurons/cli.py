"""The command line: ``tl-langneurons <command>`` (also ``python -m tl_langneurons``). Thin: it parses,
calls the Python API, and prints. A :class:`LangNeuronsError` is printed as one line and exits 2."""

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .errors import LangNeuronsError

DEMO_LANGUAGES = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th"]
DEMO_TOP_RATE = 0.05  # LAPE share of neurons kept in the demo (Tang's 1% is for 7B models; see cmd_demo)
DEMO_FACTORS = "8,16,32"  # the steering factor sweep of the demo
DEMO_DIFFMEAN_LAYER = 1  # residual diffmean steering of the demo: after block 1 of 6 (blocks 1-4 all gave 96-99% at beta 2-8)
DEMO_BETAS = "1,2,4"


def _languages(value: str | None) -> list[str] | None:
    if value is None:
        return None
    langs = [x.strip() for x in value.split(",") if x.strip()]
    if not langs:
        raise LangNeuronsError(f"--languages {value!r} names no language; give a comma-separated list like en,de,fr")
    return langs


def _positive(name: str, value):
    if value is not None and value < 1:
        raise LangNeuronsError(f"{name} must be a positive integer, got {value}")
    return value


def _floats(name: str, value: str) -> list[float]:
    """A comma-separated list of finite numbers, e.g. ``4,16,64``."""
    parts = [x.strip() for x in value.split(",") if x.strip()]
    out = []
    for x in parts:
        try:
            f = float(x)
        except ValueError:
            f = math.nan
        if not math.isfinite(f):
            raise LangNeuronsError(f"{name}: {x!r} is not a finite number; give a comma-separated list like 4,16,64")
        out.append(f)
    if not out:
        raise LangNeuronsError(f"{name} {value!r} names no number; give a comma-separated list like 4,16,64")
    return out


def _finite(name: str, value):
    if value is not None and not math.isfinite(value):
        raise LangNeuronsError(f"{name} must be a finite number, got {value}")
    return value


def _out_dir_free(path: str) -> Path:
    """The output directory, refused at once if it is an existing file (not after minutes of work)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise LangNeuronsError(f"output directory {path!r} is an existing file")
    return out


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error: raised, printed by
    :func:`main`, exit status 2 (argparse would print the whole usage block first)."""

    def error(self, message):
        raise LangNeuronsError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------


def cmd_record(args) -> int:
    from .corpus import load_corpus
    from .models import SITES, _resolve_source, load_model
    from .record import _dist_info, record

    _positive("--max-sentences", args.max_sentences)
    _positive("--batch-size", args.batch_size)
    # checked before the corpus is read and transformer_lens imported (~30 s): mistakes fail at once
    if args.site not in SITES:
        raise LangNeuronsError(f"unknown --site {args.site!r}; allowed: {', '.join(SITES)}")
    _resolve_source(args.model)
    _maybe_init_distributed(args)
    corpus = load_corpus(args.corpus, languages=_languages(args.languages), split=args.split,
                         max_sentences=args.max_sentences)
    model = load_model(args.model, device=args.device, dtype=args.dtype, site=args.site)
    out = Path(args.out)
    stats = record(model, corpus, site=args.site, batch_size=args.batch_size,
                   sentence_means=args.sentence_means, histogram_edges=True if args.histograms else None,
                   pack=args.pack, checkpoint_dir=out / ".checkpoint", checkpoint_every=args.checkpoint_every,
                   resume=args.resume)
    rank, _ = _dist_info()
    if rank == 0:
        stats.save(out)
        print(json.dumps(_summary(stats), indent=1))
    return 0


def _maybe_init_distributed(args) -> None:
    """Under torchrun (WORLD_SIZE > 1) join the process group: gloo on CPU, NCCL on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if args.device.startswith("cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            args.device = f"cuda:{local}"
            torch.cuda.set_device(local)


def _summary(stats) -> dict:
    p = stats.activation_probability()
    return {
        "languages": stats.languages,
        "site": stats.site,
        "model": stats.meta.get("model", {}).get("name"),
        "tokens": {k: int(n) for k, n in zip(stats.languages, stats.n_tokens.tolist())},
        "activation_probability_per_layer": [round(x, 4) for x in p.mean(dim=(0, 2)).tolist()],
    }


# Method options of `identify`, each owned by one method (its defaults are the function's).
METHOD_OPTIONS = {
    "lape": ("top_rate", "filter_rate", "activation_bar_ratio", "normalize_entropy", "per_layer"),
    "ap": ("n", "n_positive", "n_negative", "languages"),
    "threshold": ("top_m", "min_probability", "all_sentences"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cmd_identify(args) -> int:
    given = {k: getattr(args, k) for opts in METHOD_OPTIONS.values() for k in opts if getattr(args, k) is not None}
    for k in given:
        if k not in METHOD_OPTIONS[args.method]:
            owner = next(m for m, opts in METHOD_OPTIONS.items() if k in opts)
            allowed = ", ".join(_flag(o) for o in METHOD_OPTIONS[args.method])
            raise LangNeuronsError(f"{_flag(k)} is an option of --method {owner}, not of --method {args.method} "
                                   f"(whose options are {allowed})")
    from .identify import ap_experts_all, lape, threshold
    from .stats import NeuronStats

    stats = NeuronStats.load(args.stats)
    if args.method == "lape":
        neurons = lape(stats, **given)
    elif args.method == "ap":
        languages = _languages(given.pop("languages", None))
        neurons = ap_experts_all(stats, languages, **given)
    else:
        neurons = threshold(stats, **given)
    path = neurons.save(args.out)
    counts = neurons.counts()
    print(json.dumps({"method": neurons.method, "params": neurons.params, "counts": counts,
                      "union": len(neurons.union()), "out": str(path)}, indent=1))
    return 0


def _load_neurons_and_stats(args):
    from .neurons import LanguageNeurons
    from .stats import NeuronStats

    neurons = LanguageNeurons.load(args.neurons)
    stats = NeuronStats.load(args.stats) if args.stats is not None else None
    return neurons, stats


def _print_analysis(summary: dict, out: Path) -> None:
    print("neurons per language: " + ", ".join(f"{k} {n}" for k, n in summary["counts"].items())
          + f" (union {summary['union']}, {summary['union_share_of_model']:.2%} of the model)")
    rel = summary["relatedness"]
    for test, by_group in rel["tests"].items():
        for by, r in by_group.items():
            if "skipped" in r:
                print(f"{test} by {by}: skipped ({r['skipped']})")
            else:
                print(f"{test} by {by}: statistic {r['statistic']:.4g}, p = {r['p_value']:.4g} "
                      f"({rel['n_permutations']} permutations, {r['n_languages']} languages, {rel['metric']})")
    print(f"wrote {len(summary['files'])} files to {out}")


def cmd_analyze(args) -> int:
    from .report import write_analysis

    neurons, stats = _load_neurons_and_stats(args)
    summary = write_analysis(neurons, args.out, stats, metric=args.metric, n_permutations=args.permutations,
                             seed=args.seed, source=str(args.neurons))
    _print_analysis(summary, Path(args.out))
    return 0


def cmd_plot(args) -> int:
    from .report import write_figures

    neurons, stats = _load_neurons_and_stats(args)
    for path in write_figures(neurons, args.out, stats, metric=args.metric):
        print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# Measurements under interventions: ppl, steer, lss (METHODS §6)


def _control(value: str) -> str | None:
    return None if value == "none" else value


def _positions_arg(value: str | None):
    """``all``/``prompt``/``generated``/``last`` or a comma-separated list of positions ≥ 0."""
    if value is None:
        return None
    from .intervene import POSITIONS

    if value in POSITIONS:
        return value
    try:
        pos = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        pos = []
    if not pos or min(pos) < 0:
        raise LangNeuronsError(f"unknown --positions {value!r}; allowed: {', '.join(POSITIONS)} or a "
                               "comma-separated list of positions ≥ 0")
    return pos


def _steer_mode(args, modes) -> str:
    """The mode and the statistics it needs, checked before anything is loaded."""
    from .evaluate import DEFAULT_MODE, DEFAULT_STATISTIC
    from .intervene import _statistic

    if args.statistic is not None:
        _statistic(args.statistic)  # a misspelt statistic fails here, not after the model is loaded
    mode = args.mode if args.mode is not None else DEFAULT_MODE
    if mode not in modes:
        raise LangNeuronsError(f"unknown --mode {mode!r}; allowed: {', '.join(modes)}")
    if mode in ("set", "add") and args.stats is None:
        raise LangNeuronsError(f"--mode {mode} needs --stats (the recorded statistics whose "
                               f"{args.statistic or DEFAULT_STATISTIC} activation is set or added); "
                               "--mode scale needs none")
    return mode


def _measure_inputs(args, mode: str, targets: list[str]):
    """The neuron set and (for set/add) its statistics, checked against each other and the targets."""
    from .neurons import LanguageNeurons
    from .report import check_stats_match
    from .stats import NeuronStats

    neurons = LanguageNeurons.load(args.neurons)
    if targets == ["all"]:
        targets = list(neurons.languages)
    for t in targets:
        if t not in neurons:
            raise LangNeuronsError(f"unknown --target {t!r}; the neuron set has: {', '.join(neurons.languages)}")
    stats = None
    if mode in ("set", "add"):
        stats = NeuronStats.load(args.stats)
        check_stats_match(neurons, stats)
        for t in targets:
            if t not in stats.languages:
                raise LangNeuronsError(f"--target {t!r} has no statistics in {args.stats!r}; "
                                       f"they hold: {', '.join(stats.languages)}")
    return neurons, stats, targets


def _load_for(args, neurons):
    """The model at the neuron set's site; refused if the set was identified on other weights."""
    from .models import load_model, weights_hash

    model = load_model(args.model, device=args.device, dtype=args.dtype, site=neurons.site)
    want = neurons.model.get("weights_hash")
    if want and want != weights_hash(model):
        raise LangNeuronsError(f"the neuron set {str(args.neurons)!r} was identified on model "
                               f"{neurons.model.get('name')!r} (weights {want!r}), not on --model {args.model!r}")
    return model


def cmd_ppl(args) -> int:
    from .corpus import builtin_languages, load_corpus
    from .evaluate import perplexity_matrix
    from .measure_io import write_ppl
    from .models import _resolve_source
    from .neurons import LanguageNeurons

    _positive("--max-sentences", args.max_sentences)
    _positive("--batch-size", args.batch_size)
    out = _out_dir_free(args.out)
    _resolve_source(args.model)
    neurons = LanguageNeurons.load(args.neurons)
    langs = _languages(args.languages)
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
    model = _load_for(args, neurons)
    df = perplexity_matrix(model, corpus, neurons, languages=langs, control=_control(args.control), seed=args.seed,
                           batch_size=args.batch_size, progress=True)
    run = {"model": args.model, "corpus": args.corpus, "split": split, "max_sentences": args.max_sentences,
           "neurons": str(args.neurons), "site": neurons.site, "method": neurons.method,
           "control": _control(args.control), "seed": args.seed}
    summary = write_ppl(df, out, run=run)
    head = {k: summary[k] for k in ("diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll",
                                    "diag_over_offdiag", "diag_over_control", "frac_most_hurt",
                                    "n_ablated", "n_evaluated")}
    print(json.dumps(head, indent=1))
    print(f"wrote {len(summary['files'])} files to {out}", file=sys.stderr)
    return 0


def _read_prompts(path: str) -> list[str]:
    """One prompt per line (UTF-8); an empty line is BOS only (unconditional generation)."""
    p = Path(path)
    if not p.is_file():
        raise LangNeuronsError(f"no prompts file at {path!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LangNeuronsError(f"prompts file {path!r} is not UTF-8 ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line opens no new prompt
        lines.pop()
    if not lines:
        raise LangNeuronsError(f"prompts file {path!r} is empty; write one prompt per line (an empty line = BOS only)")
    return [line.rstrip("\r") for line in lines]


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _generation_args(args) -> list[str] | None:
    """Check the decoding options of steer/diffmean before anything is loaded; return the prompts
    (``None``: the library's default prompts)."""
    for name in ("--n-samples", "--n-prompts", "--max-new-tokens", "--batch-size", "--top-k"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.temperature is not None and not args.greedy and not args.temperature > 0:
        raise LangNeuronsError(f"--temperature must be > 0 when sampling (or use --greedy), got {args.temperature}")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise LangNeuronsError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if args.bos_only and args.prompts is not None:
        raise LangNeuronsError(f"give --bos-only or --prompts {args.prompts}, not both")
    return _read_prompts(args.prompts) if args.prompts is not None else ([""] if args.bos_only else None)


def _given_generation(args) -> dict:
    """Only the decoding options that were given: the library's defaults (steer's best settings)
    apply to the rest."""
    given = {k: getattr(args, k) for k in ("n_samples", "max_new_tokens", "temperature", "top_k", "n_prompts",
                                           "repetition_penalty", "batch_size") if getattr(args, k) is not None}
    if args.source is not None:
        given["source"] = _languages(args.source)
    return given


def _generation_run(args, given: dict) -> dict:
    """What a steering run's summary.json records of its prompts and decoding."""
    return {"prompts": args.prompts or ("BOS only" if args.bos_only else "built-in parallel split"),
            "greedy": args.greedy, "seed": args.seed, "control": _control(args.control),
            **{k: v for k, v in given.items() if k != "positions"}}


def cmd_steer(args) -> int:
    from .evaluate import STEER_MODES, steer_sweep
    from .measure_io import write_steer
    from .models import _resolve_source

    mode = _steer_mode(args, STEER_MODES)
    if args.factors is not None and args.factor is not None:
        raise LangNeuronsError(f"give --factor {args.factor:g} or --factors {args.factors}, not both")
    factors = _floats("--factors", args.factors) if args.factors is not None else None
    _finite("--factor", args.factor)
    prompts = _generation_args(args)
    positions = _positions_arg(args.positions)
    out = _out_dir_free(args.out)
    _resolve_source(args.model)
    targets = _languages(args.target) if args.target != "all" else ["all"]
    neurons, stats, targets = _measure_inputs(args, mode, targets)
    if factors is None:
        from .evaluate import DEFAULT_FACTOR

        factors = [args.factor if args.factor is not None else DEFAULT_FACTOR]
    given = _given_generation(args)
    if args.statistic is not None:
        given["statistic"] = args.statistic
    if positions is not None:
        given["positions"] = positions
    model = _load_for(args, neurons)
    df = steer_sweep(model, neurons, targets, factors, [mode], prompts, stats, greedy=args.greedy, seed=args.seed,
                     control=_control(args.control), progress=True, **given)
    run = {"model": args.model, "neurons": str(args.neurons), "stats": args.stats, "site": neurons.site,
           "method": neurons.method, "targets": targets, **_generation_run(args, given)}
    summary = write_steer(df, out, run=run)
    for cell in summary["cells"]:
        m = cell["mean"]
        print(f"{cell['mode']} x{cell['factor']:g}: mean target-language rate {_pct(m.get('target_rate'))} "
              f"(no intervention {_pct(m.get('baseline_rate'))}, random control {_pct(m.get('control_rate'))}) "
              f"over {m['n_targets']} target(s)")
    if summary["sweep"]:
        s = summary["settings"]
        print(f"best: {s['mode']} x{s['factor']:g}")
    for t, r in summary["targets"].items():
        print(f"  {t}: {_pct(r['target_rate'])} [{_pct(r['target_low'])}, {_pct(r['target_high'])}] "
              f"of {r['n']}; no intervention {_pct(r.get('baseline_rate'))}, control {_pct(r.get('control_rate'))}")
    print(f"wrote {len(summary['files'])} files to {out}", file=sys.stderr)
    return 0


def cmd_diffmean(args) -> int:
    from .corpus import load_corpus
    from .evaluate import diffmean_sweep
    from .measure_io import write_steer
    from .models import _resolve_source, load_model

    betas = _floats("--betas", args.betas)
    _positive("--max-sentences", args.max_sentences)
    prompts = _generation_args(args)
    positions = _positions_arg(args.positions)
    out = _out_dir_free(args.out)
    _resolve_source(args.model)
    langs = _languages(args.languages)
    split = "stats" if args.corpus == "builtin" and args.split is None else args.split
    corpus = load_corpus(args.corpus, languages=langs, split=split, max_sentences=args.max_sentences)
    targets = _languages(args.target) if args.target != "all" else list(corpus.languages)
    for t in targets:
        if t not in corpus.languages:
            raise LangNeuronsError(f"unknown --target {t!r}; the corpus has: {', '.join(corpus.languages)}")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if not 0 <= args.layer < model.cfg.n_layers:
        raise LangNeuronsError(f"--layer must be in [0, {model.cfg.n_layers}), got {args.layer}")
    given = _given_generation(args)
    if positions is not None:
        given["positions"] = positions
    df = diffmean_sweep(model, corpus, targets, args.layer, betas, prompts, control=_control(args.control),
                        greedy=args.greedy, seed=args.seed, progress=True, **given)
    run = {"model": args.model, "method": "diffmean", "layer": args.layer, "corpus": args.corpus, "split": split,
           "max_sentences": args.max_sentences, "languages": list(corpus.languages), "targets": targets,
           **_generation_run(args, given)}
    summary = write_steer(df, out, run=run)
    for cell in summary["cells"]:
        m = cell["mean"]
        print(f"diffmean beta {cell['factor']:g} after block {args.layer}: mean target-language rate "
              f"{_pct(m.get('target_rate'))} (no intervention {_pct(m.get('baseline_rate'))}, random direction "
              f"{_pct(m.get('control_rate'))}) over {m['n_targets']} target(s)")
    print(f"wrote {len(summary['files'])} files to {out}", file=sys.stderr)
    return 0


def cmd_lss(args) -> int:
    from .evaluate import STEER_MODES, load_facts, lss
    from .measure_io import write_lss
    from .models import _resolve_source

    mode = _steer_mode(args, STEER_MODES)
    _finite("--factor", args.factor)
    _positive("--batch-size", args.batch_size)
    positions = _positions_arg(args.positions)
    if args.source == args.target:
        raise LangNeuronsError(f"--source and --target must differ, both are {args.source!r}")
    out = _out_dir_free(args.out)
    _resolve_source(args.model)
    items = load_facts(args.facts, languages=[args.source, args.target])
    neurons, stats, _ = _measure_inputs(args, mode, [args.target])
    given = {k: getattr(args, k) for k in ("factor", "statistic", "batch_size") if getattr(args, k) is not None}
    if positions is not None:
        given["positions"] = positions
    model = _load_for(args, neurons)
    df = lss(model, neurons, items, args.source, args.target, stats=stats, mode=mode, control=_control(args.control),
             seed=args.seed, progress=True, **given)
    run = {"model": args.model, "neurons": str(args.neurons), "stats": args.stats, "facts": args.facts or "bundled",
           "site": neurons.site, "method": neurons.method, "control": _control(args.control), "seed": args.seed,
           **{k: v for k, v in given.items() if k != "positions"}}
    summary = write_lss(df, out, run=run)
    for pair in summary["pairs"]:
        for cond in ("intervention", "control"):
            if cond in pair:
                r = pair[cond]
                print(f"LSS {pair['source']}->{pair['target']} ({pair['mode']} x{pair['factor']:g}, {cond}): "
                      f"{_pct(r['lss'])} [{_pct(r['low'])}, {_pct(r['high'])}] of {r['n_items']} items, "
                      f"mean shift of delta {r['mean_delta_shift']:+.3f}")
    print(f"wrote {len(summary['files'])} files to {out}", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    from .models import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=1))
    else:
        for name, path in models.items():
            print(f"{name}\t{path}")
    return 0


def cmd_bench(args) -> int:
    _positive("--max-sentences", args.max_sentences)
    _positive("--repeats", args.repeats)
    # only what was given: each benchmark's own defaults apply to the rest
    given = {k: getattr(args, k) for k in ("max_sentences", "repeats") if getattr(args, k) is not None}
    if args.what == "record":
        from .bench import bench_record

        result = bench_record(model=args.model, batch_size=args.batch_size, **given)
    elif args.what == "identify":
        from .identify import bench_identify

        result = bench_identify()
    elif args.what == "steer":
        from .bench import bench_steer

        result = bench_steer(model=args.model, target=args.target, **given)
    else:
        raise LangNeuronsError(f"unknown benchmark {args.what!r}; allowed: 'record', 'identify', 'steer'")
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


def cmd_demo(args) -> int:
    from .corpus import load_corpus
    from .evaluate import DEFAULT_MODE, DEFAULT_STATISTIC, diffmean_sweep, perplexity_matrix, steer_sweep
    from .identify import lape
    from .measure_io import write_ppl, write_steer
    from .models import load_model
    from .record import record
    from .report import write_analysis, write_figures
    from .report_page import write_report
    from .stats import atomic_write_text

    out = _out_dir_free(args.out)
    langs = _languages(args.languages) or DEMO_LANGUAGES
    for name in ("--max-sentences", "--eval-sentences", "--n-samples"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    factors = _floats("--factors", args.factors)
    betas = _floats("--betas", args.betas)
    steps = 6

    print(f"[demo 1/{steps}] loading the built-in model; recording {len(langs)} languages of the built-in "
          "corpus ('stats' split)", file=sys.stderr)
    model = load_model("builtin")
    if not 0 <= args.diffmean_layer < model.cfg.n_layers:  # checked now, not after minutes of work
        raise LangNeuronsError(f"--diffmean-layer must be in [0, {model.cfg.n_layers}), got {args.diffmean_layer}")
    corpus = load_corpus("builtin", languages=langs, split="stats", max_sentences=args.max_sentences)
    stats = record(model, corpus, site="act", batch_size=32)
    stats.save(out / "stats")
    summary = _summary(stats)
    p = stats.activation_probability()
    # How language-selective the neurons are: share of neurons whose highest-p language has
    # at least twice the activation probability of the next one.
    top2 = p.topk(2, dim=0).values
    selective = ((top2[0] > 2 * top2[1]) & (top2[0] > 0.05)).double().mean(dim=1)
    summary["selective_share_per_layer"] = [round(x, 4) for x in selective.tolist()]

    # LAPE with 5% instead of Tang's 1%: the built-in model has 6 x 1,792 neurons, and 1% leaves
    # only a handful per language, too few to see where they sit or which languages share them.
    print(f"[demo 2/{steps}] LAPE (top_rate {DEMO_TOP_RATE}), analysis and figures", file=sys.stderr)
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
    print(f"[demo 3/{steps}] perplexity matrix on the 'eval' split: each language's neurons switched off, "
          "and as many random neurons per layer (control)", file=sys.stderr)
    eval_corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=args.eval_sentences)
    # batches of 8: the built-in corpus's few long sentences pad a batch of 32 to 2x its tokens,
    # and on a CPU every padded token costs as much as a real one (8 is 2.5x faster than 32 here)
    ppl_df = perplexity_matrix(model, eval_corpus, neurons, languages=langs, control="random", seed=0,
                               batch_size=8, progress=True)
    ppl = write_ppl(ppl_df, out / "ppl", run={"model": "builtin", "corpus": "builtin", "split": "eval",
                                              "max_sentences": args.eval_sentences, "neurons": str(neurons_path),
                                              "control": "random", "seed": 0})

    print(f"[demo 4/{steps}] steering every language: {DEFAULT_MODE} its neurons to x{args.factors} the "
          f"{DEFAULT_STATISTIC} activation, from BOS only, with and without the intervention and under the "
          "random control", file=sys.stderr)
    steer_df = steer_sweep(model, neurons, found, factors, [DEFAULT_MODE], prompts=[""], stats=stats,
                           n_samples=args.n_samples, seed=0, progress=True)
    steer = write_steer(steer_df, out / "steer", run={"model": "builtin", "neurons": str(neurons_path),
                                                       "stats": str(out / "stats"), "targets": found,
                                                       "prompts": "BOS only", "seed": 0})
    # The baseline neuron steering must be compared with: a direction in the residual stream
    # (difference of the target's and the other languages' mean residual), read from the same text.
    print(f"[demo 5/{steps}] the baseline: residual difference-of-means steering after block {args.diffmean_layer}, "
          f"beta {args.betas}, with a random direction of the same norm as control", file=sys.stderr)
    dm_df = diffmean_sweep(model, corpus, found, args.diffmean_layer, betas, prompts=[""], n_samples=args.n_samples,
                           seed=0, progress=True)
    dm = write_steer(dm_df, out / "steer_diffmean", run={"model": "builtin", "method": "diffmean",
                                                         "layer": args.diffmean_layer, "corpus": "builtin stats",
                                                         "targets": found, "prompts": "BOS only", "seed": 0})
    summary["ppl"] = {k: ppl[k] for k in ("diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll",
                                          "diag_over_offdiag", "diag_over_control", "frac_most_hurt")}
    summary["steer"] = {"settings": steer.get("settings"), "mean": steer.get("mean")}
    summary["steer_diffmean"] = {"layer": args.diffmean_layer, "settings": dm.get("settings"), "mean": dm.get("mean")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")

    print(f"[demo 6/{steps}] report", file=sys.stderr)
    report = write_report(out, title="Language-specific neurons of the built-in model")
    print(json.dumps(summary, indent=1))
    for what, where in (("statistics", out / "stats"), ("neurons", neurons_path),
                        ("tables and summary.json", out / "analysis"),
                        (f"{len(figures) // 2} figures (PNG + PDF)", out / "figures"),
                        ("perplexity matrix (ppl.csv, summary.json, ppl_change figure)", out / "ppl"),
                        ("steering generations (steer.csv, summary.json, rate-vs-factor figure)", out / "steer"),
                        ("the same for residual diffmean steering", out / "steer_diffmean"),
                        ("this summary", out / "summary.json"), ("the report", report)):
        print(f"[demo] {what}: {where}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tl-langneurons", description="Language-specific neurons in multilingual LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="record per-language neuron statistics")
    r.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    r.add_argument("--corpus", default="builtin", help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    r.add_argument("--split", default=None, help="built-in corpus split (train/stats/eval/parallel); default stats")
    r.add_argument("--languages", default=None, help="comma-separated language codes (default: all)")
    r.add_argument("--site", default="act", help="act (default), pre or post")
    r.add_argument("--max-sentences", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default="float32")
    r.add_argument("--sentence-means", action="store_true", help="keep each sentence's mean activation")
    r.add_argument("--histograms", action="store_true", help="keep per-neuron histograms (quantiles)")
    r.add_argument("--pack", type=int, default=None, help="pack sentences into windows of N tokens")
    r.add_argument("--checkpoint-every", type=int, default=50, help="batches between checkpoints")
    r.add_argument("--resume", action="store_true", help="continue an interrupted recording in --out")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_record)

    i = sub.add_parser("identify", help="find language-specific neurons in recorded statistics",
                       description="Find language-specific neurons in recorded statistics. Each method option "
                                   "belongs to one method; the defaults are the papers'.")
    i.add_argument("--stats", required=True, help="directory written by 'record'")
    i.add_argument("--method", required=True, choices=list(METHOD_OPTIONS),
                   help="lape (Tang et al. 2024), ap (Kojima et al. 2024; needs --sentence-means "
                        "statistics) or threshold (non-contrastive baseline)")
    i.add_argument("--out", required=True, help="neurons.json to write (or a directory to write it in)")
    g = i.add_argument_group("lape")
    g.add_argument("--top-rate", type=float, default=None, help="share of all neurons kept (default 0.01)")
    g.add_argument("--filter-rate", type=float, default=None, help="quantile of p for the eligibility threshold (0.95)")
    g.add_argument("--activation-bar-ratio", type=float, default=None,
                   help="quantile of p a language must exceed to own a neuron (0.95)")
    g.add_argument("--normalize-entropy", action="store_true", default=None, help="divide the entropy by log K")
    g.add_argument("--per-layer", action="store_true", default=None, help="keep top-rate of each layer")
    g = i.add_argument_group("ap")
    g.add_argument("--n", type=int, default=None, help="units per language, half top and half bottom (2000)")
    g.add_argument("--n-positive", type=int, default=None, help="sentences of the language (500)")
    g.add_argument("--n-negative", type=int, default=None, help="sentences of the other languages together (2500)")
    g.add_argument("--languages", default=None, help="comma-separated languages to find units for (default: all)")
    g = i.add_argument_group("threshold (give exactly one)")
    g.add_argument("--top-m", type=int, default=None, help="each language's m neurons of highest p (Mondal et al.)")
    g.add_argument("--min-probability", type=float, default=None, help="each language's neurons with p >= this")
    g.add_argument("--all-sentences", action="store_true", default=None,
                   help="neurons whose sentence mean is > 0 in every sentence (Rahmanisa et al.)")
    i.set_defaults(func=cmd_identify)

    for name, func, what in (("analyze", cmd_analyze, "CSV tables and summary.json (with the relatedness tests)"),
                             ("plot", cmd_plot, "figures as PNG and PDF")):
        a = sub.add_parser(name, help=f"{what} of a neuron set")
        a.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
        a.add_argument("--stats", default=None, help="the statistics the neurons came from (optional; "
                       + ("adds the activation probability of each set" if name == "analyze"
                          else "adds the entropy distribution") + ")")
        a.add_argument("--metric", default="jaccard",
                       help="overlap measure: jaccard, overlap_coefficient or intersection")
        if name == "analyze":
            a.add_argument("--permutations", type=int, default=10000, help="permutations of the relatedness tests")
            a.add_argument("--seed", type=int, default=0)
        a.add_argument("--out", required=True, help="output directory")
        a.set_defaults(func=func)

    def model_options(c) -> None:
        c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory "
                       "(the one the neurons were found on; loaded at the neurons' site)")
        c.add_argument("--neurons", required=True, help="neurons.json written by 'identify'")
        c.add_argument("--device", default="cpu")
        c.add_argument("--dtype", default="float32")
        c.add_argument("--control", default="random", choices=["random", "none"],
                       help="random (default): the same intervention on random neurons of the same layer profile")
        c.add_argument("--seed", type=int, default=0, help="seeds the random control (and sampling)")

    def steer_options(c) -> None:
        c.add_argument("--stats", default=None, help="statistics at the neurons' site ('record'); needed by "
                       "--mode set and add, which write a statistic of the target language")
        c.add_argument("--mode", default=None, help="set (a := factor x statistic), scale (a := factor x a) or add "
                       "(a := a + factor x statistic); default: the library's DEFAULT_MODE")
        c.add_argument("--factor", type=float, default=None, help="default: the library's DEFAULT_FACTOR")
        c.add_argument("--statistic", default=None, help="mean (over tokens), median/max/min (of sentence means, "
                       "needs --sentence-means statistics) or q0.9; default: the library's DEFAULT_STATISTIC")
        c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or a comma-"
                       "separated list of positions")

    def generation_options(c) -> None:
        c.add_argument("--prompts", default=None, help="a UTF-8 file with one prompt per line (an empty line = BOS "
                       "only); default: neutral prompts from the built-in parallel split in the other languages")
        c.add_argument("--bos-only", action="store_true", help="generate from BOS alone (unconditional, the "
                       "neutral prompt of the built-in model's steering figures); --n-samples generations per target")
        c.add_argument("--source", default=None, help="languages of the default prompts, comma-separated "
                       "(default: every language but the target, in turn)")
        c.add_argument("--n-prompts", type=int, default=None, help="default prompts per target")
        c.add_argument("--n-samples", type=int, default=None, help="continuations per prompt (one with --greedy)")
        c.add_argument("--max-new-tokens", type=int, default=None)
        c.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
        c.add_argument("--temperature", type=float, default=None)
        c.add_argument("--top-k", type=int, default=None)
        c.add_argument("--repetition-penalty", type=float, default=None)
        c.add_argument("--batch-size", type=int, default=None, help="generations per generate call")

    c = sub.add_parser("ppl", help="perplexity change when each language's neurons are switched off",
                       description="Tang et al.'s deactivation matrix: zero each language's neurons and measure "
                                   "every language's NLL on the same held-out tokens, with a random-neuron control. "
                                   "Writes ppl.csv, summary.json and the ppl_change figure.")
    model_options(c)
    c.add_argument("--corpus", default="builtin", help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    c.add_argument("--split", default=None, help="built-in corpus split; default eval (held out)")
    c.add_argument("--languages", default=None, help="evaluated languages, comma-separated (default: the "
                   "neuron set's languages the corpus has); each of them in the set is also switched off")
    c.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_ppl)

    c = sub.add_parser("steer", help="generate under an intervention and identify the output language",
                       description="Steer generation towards a target language by intervening on its neurons; "
                                   "the same prompts are also generated without intervention and under the random "
                                   "control, with the same seed. Writes steer.csv, summary.json and, for a "
                                   "--factors sweep, the steer_rate_vs_factor figure. Defaults are the library's "
                                   "(evaluate.DEFAULT_*).")
    model_options(c)
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    steer_options(c)
    c.add_argument("--factors", default=None, help="a sweep over factors instead of --factor, e.g. 4,16,64")
    generation_options(c)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_steer)

    c = sub.add_parser("diffmean", help="steer with a residual difference-of-means direction (the baseline)",
                       description="The baseline neuron steering is compared with: add beta x (the target's mean "
                                   "residual - the other languages') after block --layer, read from --corpus; the same "
                                   "prompts are also generated without it and with a random direction of the same "
                                   "norm, with the same seed. Writes steer.csv, summary.json and, for several "
                                   "--betas, the steer_rate_vs_factor figure (factor = beta).")
    c.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    c.add_argument("--corpus", default="builtin", help="text the directions are read from: 'builtin', a folder of "
                   "<lang>.txt, or hf:NAME[:CONFIG][:SPLIT]")
    c.add_argument("--split", default=None, help="built-in corpus split; default stats (the neurons' text)")
    c.add_argument("--languages", default=None, help="languages of the corpus, comma-separated (default: all); "
                   "a target's direction is taken against all the others")
    c.add_argument("--max-sentences", type=int, default=None, help="the first N sentences of each language")
    c.add_argument("--target", required=True, help="language to steer towards; a comma-separated list or 'all'")
    c.add_argument("--layer", type=int, required=True, help="block after which the direction is added")
    c.add_argument("--betas", default="2", help="strengths, comma-separated (default 2)")
    c.add_argument("--positions", default=None, help="all (default), prompt, generated, last, or positions")
    c.add_argument("--device", default="cpu")
    c.add_argument("--dtype", default="float32")
    c.add_argument("--control", default="random", choices=["random", "none"],
                   help="random (default): a random direction of the same norm")
    c.add_argument("--seed", type=int, default=0, help="seeds the random direction and sampling")
    generation_options(c)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_diffmean)

    c = sub.add_parser("lss", help="Language Steering Shift on parallel facts (Rahmanisa et al. 2025)",
                       description="Per fact with its prompt in --source: does the intervention on --target's "
                                   "neurons raise log P(object in target) - log P(object in source)? Writes lss.csv "
                                   "and summary.json.")
    model_options(c)
    c.add_argument("--source", required=True, help="language of the prompts")
    c.add_argument("--target", required=True, help="language whose neurons are amplified")
    c.add_argument("--facts", default=None, help="a facts JSON file (format tl_langneurons.facts/1); "
                   "default: the bundled fixture (en, de, fr, es, ru)")
    steer_options(c)
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_lss)

    m = sub.add_parser("models", help="list the built-in models")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print their figures")
    b.add_argument("what", choices=["record", "identify", "steer"],
                   help="record: recorder vs bare forward pass; identify: LAPE on a 21 x 80 x 28,672 table, "
                        "AP on 200,000 units x 3,000 sentences, AP vs scikit-learn; steer: generation under "
                        "the default steering intervention on LAPE neurons vs without")
    b.add_argument("--json", action="store_true")
    b.add_argument("--model", default="builtin", help="record and steer")
    b.add_argument("--max-sentences", type=int, default=None,
                   help="record: sentences per language timed (200); steer: per language of the statistics (100)")
    b.add_argument("--batch-size", type=int, default=32, help="record only")
    b.add_argument("--repeats", type=int, default=None, help="record (3) and steer (5)")
    b.add_argument("--target", default="de", help="steer only")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline on the built-in model and corpus")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--languages", default=None)
    d.add_argument("--max-sentences", type=int, default=300, help="sentences per language to record (300)")
    d.add_argument("--eval-sentences", type=int, default=60,
                   help="held-out sentences per language for the perplexity matrix (60)")
    d.add_argument("--factors", default=DEMO_FACTORS, help=f"steering factors, comma-separated ({DEMO_FACTORS})")
    d.add_argument("--diffmean-layer", type=int, default=DEMO_DIFFMEAN_LAYER,
                   help=f"block after which the diffmean direction is added ({DEMO_DIFFMEAN_LAYER})")
    d.add_argument("--betas", default=DEMO_BETAS, help=f"diffmean strengths, comma-separated ({DEMO_BETAS})")
    d.add_argument("--n-samples", type=int, default=16,
                   help="steering: generations per language, factor and condition (16)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except LangNeuronsError as e:
        print(f"tl-langneurons: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
