"""The command line: ``tl-langneurons <command>`` (also ``python -m tl_langneurons``). Thin: it parses,
calls the Python API, and prints. A :class:`LangNeuronsError` is printed as one line and exits 2."""

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import LangNeuronsError

DEMO_LANGUAGES = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th"]
DEMO_TOP_RATE = 0.05  # LAPE share of neurons kept in the demo (Tang's 1% is for 7B models; see cmd_demo)


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
    if args.what == "record":
        from .bench import bench_record

        result = bench_record(model=args.model, max_sentences=args.max_sentences, batch_size=args.batch_size,
                              repeats=args.repeats)
    elif args.what == "identify":
        from .identify import bench_identify

        result = bench_identify()
    else:
        raise LangNeuronsError(f"unknown benchmark {args.what!r}; allowed: 'record', 'identify'")
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


def cmd_demo(args) -> int:
    from .corpus import load_corpus
    from .identify import lape
    from .models import load_model
    from .record import record
    from .report import write_analysis, write_figures
    from .stats import atomic_write_text

    out = Path(args.out)
    langs = _languages(args.languages) or DEMO_LANGUAGES
    _positive("--max-sentences", args.max_sentences)
    print(f"[demo] loading the built-in model and {len(langs)} languages of the built-in corpus", file=sys.stderr)
    model = load_model("builtin")
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
    print(f"[demo] LAPE (top_rate {DEMO_TOP_RATE}), analysis and figures", file=sys.stderr)
    neurons = lape(stats, top_rate=DEMO_TOP_RATE)
    neurons_path = neurons.save(out / "neurons.json")
    analysis = write_analysis(neurons, out / "analysis", stats, source=str(neurons_path))
    figures = write_figures(neurons, out / "figures", stats)
    summary["lape"] = {"top_rate": DEMO_TOP_RATE, "why": "the built-in model is small: 1% gives a handful of "
                       "neurons per language", "counts": analysis["counts"], "union": analysis["union"],
                       "relatedness": {f"{t}/{by}": {k: r.get(k) for k in ("statistic", "p_value", "skipped") if k in r}
                                       for t, g in analysis["relatedness"]["tests"].items() for by, r in g.items()}}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    for what, where in (("statistics", out / "stats"), ("neurons", neurons_path),
                        ("tables and summary.json", out / "analysis"),
                        (f"{len(figures) // 2} figures (PNG + PDF)", out / "figures"),
                        ("this summary", out / "summary.json")):
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

    m = sub.add_parser("models", help="list the built-in models")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print their figures")
    b.add_argument("what", choices=["record", "identify"],
                   help="record: recorder vs bare forward pass; identify: LAPE on a 21 x 80 x 28,672 table, "
                        "AP on 200,000 units x 3,000 sentences, AP vs scikit-learn")
    b.add_argument("--json", action="store_true")
    b.add_argument("--model", default="builtin", help="record only")
    b.add_argument("--max-sentences", type=int, default=200, help="record only")
    b.add_argument("--batch-size", type=int, default=32, help="record only")
    b.add_argument("--repeats", type=int, default=3, help="record only")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline on the built-in model and corpus")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--languages", default=None)
    d.add_argument("--max-sentences", type=int, default=300)
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
