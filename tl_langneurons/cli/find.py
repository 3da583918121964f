"""The commands that find and describe neurons: record, identify, analyze, plot; and models,
bench, demo."""

import json
import os
from pathlib import Path

from .._io import jsonable
from ..errors import LangNeuronsError
from .args import parse_floats, parse_languages, placement, positive

def cmd_record(args) -> int:
    from ..corpus import load_corpus
    from ..models import SITES, load_model
    from ..sources import resolve_source
    from ..pipeline import recording_summary
    from ..record import dist_info, record

    positive("--max-sentences", args.max_sentences)
    positive("--batch-size", args.batch_size)
    # checked before the corpus is read and transformer_lens imported (~30 s): mistakes fail at once
    if args.site not in SITES:
        raise LangNeuronsError(f"unknown --site {args.site!r}; allowed: {', '.join(SITES)}")
    resolve_source(args.model)
    placed = placement(args)
    _maybe_init_distributed(args, placed)
    corpus = load_corpus(args.corpus, languages=parse_languages(args.languages), split=args.split,
                         max_sentences=args.max_sentences)
    model = load_model(args.model, dtype=args.dtype, site=args.site, **placed)
    out = Path(args.out)
    stats = record(model, corpus, site=args.site, batch_size=args.batch_size,
                   sentence_means=args.sentence_means, histogram_edges=True if args.histograms else None,
                   pack=args.pack, checkpoint_dir=out / ".checkpoint", checkpoint_every=args.checkpoint_every,
                   resume=args.resume)
    rank, _ = dist_info()
    if rank == 0:
        stats.save(out)
        print(json.dumps(recording_summary(stats), indent=1))
    return 0


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
    stats = NeuronStats.load(args.stats)
    for need, who in method.needs_for(given):
        if need == "sentence_means" and stats.sentence_means is None:
            raise LangNeuronsError(f"{who} needs per-sentence means, which {args.stats!r} does not hold: record the "
                                   "statistics again with --sentence-means")
    for k, o in options.items():
        if k in given and o.type == "languages":
            given[k] = parse_languages(given[k])
    neurons = method.run(stats, **given)
    path = neurons.save(args.out)
    counts = neurons.counts()
    print(json.dumps({"method": neurons.method, "params": neurons.params, "counts": counts,
                      "union": len(neurons.union()), "out": str(path)}, indent=1))
    return 0


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
    print(f"wrote {len(summary['files'])} files to {out}")


def cmd_analyze(args) -> int:
    from ..outputs.tables import write_analysis

    neurons, stats = _load_neurons_and_stats(args)
    summary = write_analysis(neurons, args.out, stats, metric=args.metric, n_permutations=args.permutations,
                             seed=args.seed, source=str(args.neurons))
    _print_analysis(summary, Path(args.out))
    return 0


def cmd_plot(args) -> int:
    from ..outputs.tables import write_figures

    neurons, stats = _load_neurons_and_stats(args)
    for path in write_figures(neurons, args.out, stats, metric=args.metric):
        print(path)
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
    from ..pipeline import run_demo

    langs = parse_languages(args.languages)
    given = {} if langs is None else {"languages": langs}  # else pipeline.DEMO_LANGUAGES
    floats = lambda opt, v: None if v is None else tuple(parse_floats(opt, v))  # noqa: E731
    summary = run_demo(args.out, model=args.model, **given, max_sentences=args.max_sentences,
                       eval_sentences=args.eval_sentences, top_rate=args.top_rate,
                       factors=floats("--factors", args.factors), diffmean_layer=args.diffmean_layer,
                       betas=floats("--betas", args.betas), n_samples=args.n_samples)
    print(json.dumps(jsonable(summary), indent=1))
    return 0

