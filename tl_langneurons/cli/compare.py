"""``tl-langneurons compare-methods``: LAPE, AP, thresholds and PLND at equal size, by overlap and effect."""

import json

from .._io import check_out_dir
from .args import control, parse_languages, positive


def add_compare_parser(sub, placement_options) -> None:
    c = sub.add_parser("compare-methods", help="LAPE, AP experts, thresholds and PLND at equal size: overlap and "
                       "the perplexity effect of switching each set off",
                       description="From one recording (record --sentence-means --plnd), each method's N neurons "
                                   "per language; their pairwise overlap per language and per layer; each method's "
                                   "perplexity matrix on the same held-out tokens with the random control; "
                                   "optionally the own-language built-in cloze change (--cloze, needs the [tasks] "
                                   "extra). Writes sets/, overlap.csv, overlap_layers.csv, ppl.csv, effect.csv, "
                                   "methods.csv (the one table), summary.json and the compare_methods figure.")
    c.add_argument("--model", default="builtin", help="the model the statistics were recorded on")
    c.add_argument("--stats", required=True, help="statistics from 'record --sentence-means --plnd'")
    c.add_argument("--n", type=int, default=100, help="neurons per language for every method (even; default 100)")
    c.add_argument("--methods", default="lape,ap,threshold,plnd", help="comma-separated (default all four)")
    c.add_argument("--languages", default=None, help="languages compared (default: all in the statistics)")
    c.add_argument("--ap-positive", type=int, default=500, help="AP: sentences of the language (500)")
    c.add_argument("--ap-negative", type=int, default=2500, help="AP: sentences of the other languages (2500)")
    c.add_argument("--corpus", default="builtin", help="held-out text: 'builtin', a folder of <lang>.txt, or hf:...")
    c.add_argument("--split", default=None, help="corpus split (default for the built-in corpus: eval, held out)")
    c.add_argument("--max-sentences", type=int, default=None, help="held-out sentences per language")
    c.add_argument("--batch-size", type=int, default=16, help="held-out sentences per forward pass")
    c.add_argument("--control", default="random", choices=["random", "none"],
                   help="random: also switch off random neurons with each set's count per layer")
    c.add_argument("--seed", type=int, default=0, help="seeds the random control")
    c.add_argument("--cloze", action="store_true", help="also the own-language tlln_cloze accuracy change")
    c.add_argument("--cloze-limit", type=int, default=None, help="cloze documents per language")
    c.add_argument("--dtype", default="float32", help="the weights' dtype: float32, bfloat16 or float16")
    placement_options(c)
    c.add_argument("--out", required=True, help="output directory")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from .args import placement

    for name in ("--n", "--max-sentences", "--batch-size", "--ap-positive", "--ap-negative", "--cloze-limit"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    check_out_dir(args.out)
    from ..compare import cloze_change, effect_of_methods, equal_size_sets, method_summary, overlap_between_methods
    from ..corpus import load_corpus
    from ..models import load_model
    from ..outputs.compare import write_comparison
    from ..stats import NeuronStats

    stats = NeuronStats.load(args.stats)
    langs = parse_languages(args.languages)
    sets = equal_size_sets(stats, args.n, langs, parse_languages(args.methods), args.ap_positive, args.ap_negative)
    langs = sets[next(iter(sets))].languages
    overlap, overlap_layers = overlap_between_methods(sets)
    split = args.split if args.split is not None or args.corpus != "builtin" else "eval"
    corpus = load_corpus(args.corpus, languages=langs, split=split, max_sentences=args.max_sentences)
    model = load_model(args.model, dtype=args.dtype, site=stats.site, **placement(args))
    ppl, effect = effect_of_methods(model, corpus, sets, langs, control=control(args.control), seed=args.seed,
                                    batch_size=args.batch_size)
    cloze = cloze_change(model, sets, langs, args.cloze_limit) if args.cloze else None
    if cloze is not None:
        effect = effect.merge(cloze, on=["method", "language"], how="left")
    table = method_summary(effect, overlap)
    paths = write_comparison(args.out, sets, overlap, overlap_layers, ppl, effect, table, cloze,
                             {"n": args.n, "stats": str(args.stats), "corpus": corpus.spec, "seed": args.seed})
    print(table.to_string(index=False))
    print(json.dumps({"files": [str(p) for p in paths]}, indent=1))
    return 0
