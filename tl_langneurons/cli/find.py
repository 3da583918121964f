"""The commands that find and describe neurons: record, identify, analyze, plot; and models,
bench, demo."""

import json
from contextlib import nullcontext
import os
from pathlib import Path

from ..errors import LangNeuronsError
from .._io import ResultFolder, result_file
from .args import flags_in_errors, parse_floats, parse_languages, placement, positive, result_folder
from .done import finish

def cmd_record(args) -> int:
    from ..corpus import load_corpus
    from ..models import load_model
    from ..units import check_site_name
    from ..sources import resolve_source
    from ..pipeline import recording_summary
    from ..record import dist_info, record

    positive("--max-sentences", args.max_sentences)
    positive("--batch-size", args.batch_size)
    # checked before the corpus is read and transformer_lens imported (~30 s): mistakes fail at once
    check_site_name(args.site)
    resolve_source(args.model)
    top = _top_options(args)
    placed = placement(args)
    _maybe_init_distributed(args, placed)
    rank, world = dist_info()
    # the output folder is checked (and claimed) by rank 0 before anything is read or recorded; the
    # other processes wait for it, then write their checkpoints beside rank 0's
    rf = result_folder(args) if rank == 0 else ResultFolder(args.out, resume=args.resume)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    with rf:
        corpus = load_corpus(args.corpus, languages=parse_languages(args.languages), split=args.split,
                             max_sentences=args.max_sentences)
        model = load_model(args.model, dtype=args.dtype, site=args.site, **placed)
        stats = record(model, corpus, site=args.site, batch_size=args.batch_size,
                       sentence_means=args.sentence_means or args.bos_in_sentence_means,
                       bos_in_sentence_means=args.bos_in_sentence_means,
                       histogram_edges=True if args.histograms else None,
                       pack=args.pack, checkpoint_dir=rf.resume_dir / "record",
                       checkpoint_every=args.checkpoint_every, resume=args.resume, plnd=args.plnd,
                       plnd_top_rate=args.plnd_top_rate, **top)
        if world > 1:
            dist.barrier()  # every process's checkpoint stays until the statistics are saved
        if rank == 0:
            stats.save(rf.path)
            out = rf.commit()  # the checkpoints go only now, with the statistics in place
            s = recording_summary(stats)
            tokens = s["tokens"].values()
            p = s["activation_probability_per_layer"]
            finish([f"recorded {len(s['languages'])} languages, {sum(tokens):,} tokens ({min(tokens):,} to "
                    f"{max(tokens):,} per language) at site {s['site']} of {s['model']}",
                    f"activation probability per layer: {p[0]:.3f} (first) to {p[-1]:.3f} (last)"],
                   f"wrote the statistics to {out}")
    return 0


def _top_options(args) -> dict:
    """``record``'s top-example keywords from --top-examples/--top-units/--top-context, checked first."""
    positive("--top-examples", args.top_examples)
    if args.top_examples is None:
        if args.top_units is not None:
            raise LangNeuronsError("--top-units chooses whose top examples are kept; give --top-examples K too")
        return {}
    out = {"top_examples": args.top_examples}
    if args.top_context is not None:  # else the library's default
        parts = [x.strip() for x in args.top_context.split(",")]
        if len(parts) != 2 or not all(x.isdigit() for x in parts):
            raise LangNeuronsError(f"--top-context {args.top_context!r} must be two counts before,after, e.g. 8,4")
        out["top_context"] = (int(parts[0]), int(parts[1]))
    if args.top_units is not None:
        from ..neurons import LanguageNeurons

        out["top_units"] = LanguageNeurons.load(args.top_units)
    return out


def _maybe_init_distributed(args, placed: dict) -> None:
    """Under torchrun (WORLD_SIZE > 1) join the process group: gloo on CPU, NCCL on GPU; each
    process takes the GPU of its local rank (``placed["device"]`` is set to it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if "device_map" in placed:
        # every process would dispatch its own copy over the same GPUs
        raise LangNeuronsError("--device-map dispatches one copy of the model over the GPUs; it cannot be combined "
                               "with torchrun's one copy per process: run one process")
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        on_gpu = str(placed["device"]).startswith("cuda")
        dist.init_process_group("nccl" if on_gpu else "gloo")
        if on_gpu:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            placed["device"] = f"cuda:{local}"
            torch.cuda.set_device(local)


def cmd_identify(args) -> int:
    """Run the registered method ``--method`` (:mod:`..identify.methods`) with the options given."""
    from ..identify.methods import METHODS, get_method
    from ..stats import NeuronStats

    method = get_method(args.method)
    options = {o.name: o for m in METHODS.values() for o in m.options}
    given = {k: getattr(args, k) for k in options if getattr(args, k, None) is not None}
    method.check_given(given)  # before the statistics are read: mistakes fail at once
    # a .json file, or a folder to write neurons.json in: either checked before the statistics are read
    as_file = Path(args.out).suffix.lower() == ".json"
    target = result_file(args.out, args.overwrite) if as_file else result_folder(args)
    with nullcontext() if as_file else target:  # a folder left half-made by a failure is removed
        stats = NeuronStats.load(args.stats)
        method.check_statistics(stats, given, repr(args.stats))
        for k, o in options.items():
            if k in given and o.type == "languages":
                given[k] = parse_languages(given[k])
        with flags_in_errors([o.name for o in method.options]):  # "top_rate must be" → "--top-rate must be"
            neurons = method.run(stats, **given)
        if as_file:
            path = neurons.save(target)
        else:
            neurons.save(target.path)
            path = target.commit() / "neurons.json"
    counts = neurons.counts()
    union = len(neurons.union())
    return finish([f"{neurons.method}: {union:,} neurons ({union / (neurons.n_layers * neurons.d_mlp):.2%} of the "
                   f"model) over {len(counts)} languages",
                   "per language: " + ", ".join(f"{k} {n}" for k, n in counts.items())],
                  f"wrote {path}")


def _load_neurons_and_stats(args):
    from ..neurons import LanguageNeurons
    from ..stats import NeuronStats

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
    finish([], f"wrote {len(summary['files'])} files to {out}")


def cmd_analyze(args) -> int:
    from ..outputs.tables import write_analysis

    neurons, stats = _load_neurons_and_stats(args)
    with result_folder(args) as rf:
        summary = write_analysis(neurons, rf.path, stats, metric=args.metric, n_permutations=args.permutations,
                                 seed=args.seed, source=str(args.neurons))
        out = rf.commit()
    _print_analysis(summary, out)
    return 0


def cmd_plot(args) -> int:
    from ..outputs.tables import write_figures

    neurons, stats = _load_neurons_and_stats(args)
    with result_folder(args) as rf:
        paths = write_figures(neurons, rf.path, stats, metric=args.metric)
        out = rf.commit()
    paths = [out / Path(p).relative_to(rf.path) for p in paths]
    return finish([str(path) for path in paths], f"wrote {len(paths) // 2} figures (PNG and PDF) to {out}")



def cmd_browse(args) -> int:
    positive("--max-neurons", args.max_neurons)
    from ..outputs.browser import write_browser

    neurons, stats = _load_neurons_and_stats(args)
    index = write_browser(stats, neurons, args.out, ppl=args.ppl, title=args.title, max_neurons=args.max_neurons)
    print(index)
    return 0


def cmd_models(args) -> int:
    from ..sources import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=1))
    else:
        for name, m in models.items():
            print(f"{name}\t{m['licence']}\t{m['path']}" + ("" if m["available"] else f"\t(not installed: {m['install']})"))
    return 0


def cmd_bench(args) -> int:
    positive("--max-sentences", args.max_sentences)
    positive("--repeats", args.repeats)
    # only what was given: each benchmark's own defaults apply to the rest
    given = {k: getattr(args, k) for k in ("max_sentences", "repeats") if getattr(args, k) is not None}
    if args.what == "record":
        from ..bench import bench_record

        result = bench_record(model=args.model, batch_size=args.batch_size, **given)
    elif args.what == "identify":
        from ..bench import bench_identify

        result = bench_identify()
    elif args.what == "steer":
        from ..bench import bench_steer

        result = bench_steer(model=args.model, target=args.target, **given)
    elif args.what == "hash":
        from ..bench import bench_hash

        result = bench_hash()
    elif args.what == "gpu":
        from ..bench_gpu import bench_gpu

        result = bench_gpu(shape=args.shape)
    else:
        raise LangNeuronsError(f"unknown benchmark {args.what!r}; allowed: 'record', 'identify', 'steer', 'hash', "
                               "'gpu'")
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


def cmd_demo(args) -> int:
    from ..pipeline import demo_plan, run_demo

    langs = parse_languages(args.languages)
    given = {} if langs is None else {"languages": langs}  # else pipeline.DEMO_LANGUAGES
    floats = lambda opt, v: None if v is None else tuple(parse_floats(opt, v))  # noqa: E731
    # the plan's checks name its fields (top_rate, factor): in the flags' spelling here
    names = {k: k for k in ("max_sentences", "eval_sentences", "top_rate", "diffmean_layer", "n_samples",
                            "bench_tune", "bench_eval", "calibration_pairs")}
    bench_targets = None
    if args.bench_targets is not None:
        bench_targets = () if args.bench_targets.strip().lower() == "none" else tuple(
            parse_languages(args.bench_targets) or ())
    plan = dict(max_sentences=args.max_sentences, eval_sentences=args.eval_sentences, top_rate=args.top_rate,
                factors=floats("--factors", args.factors), diffmean_layer=args.diffmean_layer,
                betas=floats("--betas", args.betas), n_samples=args.n_samples, bench_targets=bench_targets,
                bench_tune=args.bench_tune, bench_eval=args.bench_eval, calibration_pairs=args.calibration_pairs)
    with flags_in_errors({**names, "factor": "factors", "beta": "betas"}):
        demo_plan(args.model, **plan)
    summary = run_demo(args.out, model=args.model, **given, **plan, overwrite=args.overwrite, resume=args.resume)
    out = Path(args.out)
    return finish(demo_lines(summary), f"the report: {out / 'report.md'} (every number: {out / 'summary.json'})")


def _rate(mean: dict, key: str) -> str:
    v = mean.get(key)
    return "n/a" if v is None else f"{v:.0%}"


def demo_lines(summary: dict) -> list[str]:
    """The demo's headline numbers: neurons found, what switching them off and on does, and the
    baseline; every number is in summary.json and the report."""
    from .measure import ppl_lines

    lape = summary["lape"]
    lines = [f"LAPE (top rate {lape['top_rate']:g}): {lape['union']:,} neurons over {len(lape['counts'])} languages, "
             + ", ".join(f"{k} {n}" for k, n in lape["counts"].items())]
    lines += ppl_lines(summary["ppl"])[:2]  # own vs others, and vs the random control
    for key, what in (("steer", "neuron steering"), ("steer_diffmean", "diffmean steering (the baseline)")):
        cell = summary[key]
        settings, mean = cell.get("settings") or {}, cell.get("mean") or {}
        how = (f"beta {settings.get('factor', 0):g} after block {cell['layer']}" if key == "steer_diffmean"
               else f"{settings.get('mode')} x{settings.get('factor', 0):g}")
        over = f" (mean over {mean['n_targets']} targets)" if mean.get("n_targets") else ""
        lines.append(f"{what}, best {how}{over}: target language {_rate(mean, 'target_rate')} of generations, fluent "
                     f"{_rate(mean, 'target_fluent_rate')} (no intervention {_rate(mean, 'baseline_rate')}, "
                     f"random control {_rate(mean, 'control_rate')})")
    bench = summary.get("steer_bench") or {}
    if bench.get("skipped"):
        lines.append(f"steering benchmark: skipped, {bench['skipped']}")
    elif bench.get("leaderboard"):
        top = bench["leaderboard"][0]
        none = next((r for r in bench["leaderboard"] if r["method"] == "none"), None)
        lines.append(f"steering benchmark ({', '.join(bench['targets'])}; {bench['n_eval']} prompts each): best "
                     f"{top['method']}, score {top['score']:.2f} (fluent target {top['fluent_rate']:.0%}, relevance "
                     f"{top['relevance']:.2f})" + (f"; no intervention {none['score']:.2f}" if none else ""))
    return lines

