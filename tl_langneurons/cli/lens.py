"""The latent-language lens command (``tl-langneurons lens``)."""

import json

from .._io import check_out_dir
from .args import control, parse_languages, positive


def add_lens_parser(sub, placement_options) -> None:
    c = sub.add_parser("lens", help="the latent-language lens (Wendler et al. 2024): per layer, P(target word) "
                       "and P(its English counterpart)",
                       description="Read every layer's residual stream through the model's own final norm and "
                                   "unembedding on translation, repetition and cloze prompts built from the shipped "
                                   "word set (assets/words.json; cloze sentences from the built-in parallel split), "
                                   "keeping items whose answers are single tokens of the model. Writes lens.csv (one "
                                   "row per task x language x layer x condition), lens_items.csv, summary.json (items "
                                   "kept per task and language) and the lens figure. With --neurons, also with each "
                                   "target language's own neurons switched off, and the random control.")
    c.add_argument("--model", default="builtin", help="'builtin', gemma-3-270m, a hub id or a local model directory")
    c.add_argument("--languages", default=None, help="target languages, comma-separated (default: all of the word "
                   "set's: de, fr, es, ru, zh, ja, ko)")
    c.add_argument("--tasks", default=None, help="translation, repetition, cloze (comma-separated; default all)")
    c.add_argument("--neurons", default=None, help="neurons.json written by 'identify': also switch off each target "
                   "language's own neurons (the model is loaded at the set's site)")
    c.add_argument("--control", default="random", choices=["random", "none"],
                   help="with --neurons: random (default) also switches off random neurons of the same layer profile")
    c.add_argument("--max-items", type=int, default=None, help="at most the first N items per task and language")
    c.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    c.add_argument("--seed", type=int, default=0, help="draws the few-shot examples and the random control")
    c.add_argument("--dtype", default="float32", help="the weights' dtype: float32, bfloat16 or float16")
    placement_options(c)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_lens)


def cmd_lens(args) -> int:
    from .args import placement

    positive("--max-items", args.max_items)
    positive("--batch-size", args.batch_size)
    check_out_dir(args.out)
    tasks = parse_languages(args.tasks)  # the same comma-separated parsing
    from ..lens import run_lens
    from ..outputs.lens import write_lens
    from ..models import load_model
    from ..neurons import LanguageNeurons

    neurons = LanguageNeurons.load(args.neurons) if args.neurons else None
    site = neurons.site if neurons is not None else "act"
    model = load_model(args.model, dtype=args.dtype, site=site, **placement(args))
    result = run_lens(model, parse_languages(args.languages), tasks, neurons=neurons, control=control(args.control),
                      seed=args.seed, max_items=args.max_items, batch_size=args.batch_size)
    paths = write_lens(result, args.out)
    kept = {t: {k: v["kept"] for k, v in c.items()} for t, c in result.counts.items()}
    print(json.dumps({"items_kept": kept, "files": [str(p) for p in paths]}, indent=1, ensure_ascii=False))
    return 0
