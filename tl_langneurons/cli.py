"""The command line: ``tl-langneurons <command>`` (also ``python -m tl_langneurons``). Thin: it parses,
calls the Python API, and prints. A :class:`LangNeuronsError` is printed as one line and exits 2."""

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import LangNeuronsError

DEMO_LANGUAGES = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th"]


def _languages(value: str | None) -> list[str] | None:
    if value is None:
        return None
    langs = [x.strip() for x in value.split(",") if x.strip()]
    if not langs:
        raise LangNeuronsError(f"--languages {value!r} names no language; give a comma-separated list like en,de,fr")
    return langs


def _non_negative(name: str, value):
    if value is not None and value < 1:
        raise LangNeuronsError(f"{name} must be a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------------------------


def cmd_record(args) -> int:
    from .corpus import load_corpus
    from .models import load_model
    from .record import _dist_info, record

    _non_negative("--max-sentences", args.max_sentences)
    _non_negative("--batch-size", args.batch_size)
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
    else:
        raise LangNeuronsError(f"unknown benchmark {args.what!r}; allowed: 'record'")
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


def cmd_demo(args) -> int:
    from .corpus import load_corpus
    from .models import load_model
    from .record import record

    out = Path(args.out)
    langs = _languages(args.languages) or DEMO_LANGUAGES
    _non_negative("--max-sentences", args.max_sentences)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"[demo] wrote {out / 'stats'} and {out / 'summary.json'}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl-langneurons", description="Language-specific neurons in multilingual LMs.")
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

    m = sub.add_parser("models", help="list the built-in models")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print their figures")
    b.add_argument("what", choices=["record"])
    b.add_argument("--json", action="store_true")
    b.add_argument("--model", default="builtin")
    b.add_argument("--max-sentences", type=int, default=200)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--repeats", type=int, default=3)
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="run the pipeline on the built-in model and corpus")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--languages", default=None)
    d.add_argument("--max-sentences", type=int, default=300)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LangNeuronsError as e:
        print(f"tl-langneurons: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
