"""What the paper scripts in ``analyses/`` share: the model, corpus and recording arguments;
statistics recorded here or reused with ``--stats``; LAPE sets identified here or reused with
``--neurons``; held-out text; steering prompts and decoding; writing tables and summaries; and
the ``__main__`` wrapper that reports argument mistakes in one line.

Not a script. Each script puts its own folder on ``sys.path`` before importing it, so that it is
found whether the script is run (``python analyses/x.py``) or loaded from a file by the tests.
"""

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from tl_langneurons import LangNeuronsError, LanguageNeurons, NeuronStats, load_corpus, load_model, record
# the command line's parsers: a factor list and a prompts file mean the same here as there
from tl_langneurons.cli import parse_floats
from tl_langneurons.evaluate import GenerationConfig, read_prompts
from tl_langneurons.identify import lape
from tl_langneurons import outputs
from tl_langneurons.outputs import jsonable  # jsonable: NaN/inf → null, as the package writes
from tl_langneurons.outputs.tables import check_stats_match
from tl_langneurons.stats import SENTENCE_STATS


# ---------------------------------------------------------------------------------------------
# Arguments


def parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_args(p: argparse.ArgumentParser, *, languages: str, who: str, max_sentences: int, out: str,
                   batch_size: int = 8, pack: int | None = None) -> None:
    """Model, corpus, recording and output arguments. ``pack`` adds ``--pack`` with that default
    (scripts whose statistics need one sentence per sequence leave it out)."""
    p.set_defaults(default_languages=languages)
    p.add_argument("--model", default="builtin", help="'builtin', a hub id or a local model directory")
    p.add_argument("--corpus", default="builtin",
                   help="'builtin', a folder of <lang>.txt, or hf:NAME[:CONFIG][:SPLIT] (text to record statistics on)")
    p.add_argument("--languages", default=None,
                   help=f"comma-separated (default: {who}'s {languages}, or the languages of --stats)")
    p.add_argument("--max-sentences", type=int, default=max_sentences, help="sentences (or paragraphs) recorded per language")
    if pack is not None:
        p.add_argument("--pack", type=int, default=pack,
                       help="pack text into windows of N tokens (Tang: 4096); 0 = one sentence per row")
    p.add_argument("--site", default="act", help="where units are read: act, pre, post, q, k, v, o, up, down, "
                   "linear (all linear outputs), sae:DIR (default act)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=batch_size, help="sequences per forward pass")
    p.add_argument("--stats", default=None, help="reuse statistics recorded before instead of recording")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recording in --out/stats")
    p.add_argument("--out", default=out)


def add_lape_args(p: argparse.ArgumentParser, top_rate: float = 0.05, reuse: bool = True) -> None:
    """LAPE's parameters; ``reuse`` adds ``--neurons`` (a set identified before)."""
    p.add_argument("--top-rate", type=float, default=top_rate, help="share of all neurons kept (Tang: 0.01)")
    p.add_argument("--filter-rate", type=float, default=0.95)
    p.add_argument("--activation-bar-ratio", type=float, default=0.95)
    if reuse:
        p.add_argument("--neurons", default=None,
                       help="reuse a neurons.json (e.g. from tang2024_lape.py) instead of identifying LAPE sets")


def add_eval_args(p: argparse.ArgumentParser, eval_sentences: int) -> None:
    p.add_argument("--eval-corpus", default=None,
                   help="held-out text for perplexities (default: the built-in corpus's 'eval' split when --corpus is "
                        "builtin; otherwise required, so that no text is both recorded and evaluated)")
    p.add_argument("--eval-sentences", type=int, default=eval_sentences, help="held-out sentences per language")


def add_steer_args(p: argparse.ArgumentParser, *, prompts: str = "neutral", n_prompts: int = 16, n_samples: int = 4,
                   max_new_tokens: int = 32, temperature: float = 0.8, greedy: bool = False,
                   repetition_penalty: float = 1.0) -> None:
    p.add_argument("--prompts", default=prompts,
                   help="'neutral' (the first words of built-in parallel sentences in other languages), 'bos' "
                        "(unconditional: BOS only), or a UTF-8 file with one prompt per line (an empty line: BOS only)")
    p.add_argument("--n-prompts", type=int, default=n_prompts, help="neutral prompts per target")
    p.add_argument("--prompt-words", type=int, default=3, help="words per neutral prompt")
    p.add_argument("--n-samples", type=int, default=n_samples, help="continuations per prompt (one when greedy)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature)
    p.add_argument("--top-k", type=int, default=None)
    if greedy:
        p.add_argument("--sample", dest="greedy", action="store_false", help="sample instead of greedy decoding")
    else:
        p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--repetition-penalty", type=float, default=repetition_penalty)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, prompts and the random control")


def split_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise LangNeuronsError(f"{what}: give a comma-separated list, got {text!r}")
    return items


def float_list(text: str, what: str) -> list[float]:
    return parse_floats(what, text)


def languages(args) -> list[str] | None:
    """The languages asked for, or the default list (``None`` if --stats should decide)."""
    if args.languages is not None:
        return split_list(args.languages, "--languages")
    return None if args.stats is not None else split_list(args.default_languages, "default languages")


# ---------------------------------------------------------------------------------------------
# Model, statistics, neurons, text


def get_model(args):
    return load_model(args.model, device=args.device, dtype=args.dtype, site=args.site)


def needs_sentence_means(statistic: str) -> bool:
    """Whether ``set``/``add`` to this statistic reads per-sentence means (median, max, min of
    them; ``mean`` is over tokens, ``q0.9`` … from the histogram)."""
    return statistic in SENTENCE_STATS[1:]


def get_stats(args, out: Path, model=None, sentence_means: bool = False) -> NeuronStats:
    """Statistics of the requested languages: ``--stats`` (kept to ``--languages`` if given), or
    recorded on ``--corpus`` and saved to ``out/stats``. ``model`` is loaded only if recording."""
    langs = languages(args)
    if args.stats is not None:
        stats = NeuronStats.load(args.stats)
        if langs is not None:
            stats = stats.select(langs)  # raises, naming the languages it has, if one is missing
        if sentence_means and stats.sentence_means is None:
            raise LangNeuronsError(f"the statistics in {args.stats!r} have no per-sentence means; record them "
                                   "with sentence_means (tl-langneurons record --sentence-means), or drop --stats")
        return stats
    pack = getattr(args, "pack", 0) or None
    if sentence_means and pack:
        raise LangNeuronsError("these settings need per-sentence means, which are recorded one sentence per "
                               "sequence: add --pack 0")
    corpus = load_corpus(args.corpus, languages=langs, max_sentences=args.max_sentences)
    model = get_model(args) if model is None else model
    bos = bool(getattr(args, "bos_in_sentence_means", False)) and sentence_means
    stats = record(model, corpus, site=args.site, batch_size=args.batch_size, sentence_means=sentence_means,
                   bos_in_sentence_means=bos, pack=pack, checkpoint_dir=out / "stats" / ".checkpoint", resume=args.resume)
    stats.save(out / "stats")
    return stats


def get_lape(args, stats: NeuronStats, out: Path) -> tuple[LanguageNeurons, Path]:
    """LAPE sets of the statistics' languages (or ``--neurons``, checked against the statistics),
    saved as ``out/neurons.json``."""
    if args.neurons is not None:
        neurons = LanguageNeurons.load(args.neurons)
        check_stats_match(neurons, stats)
        missing = [k for k in stats.languages if k not in neurons]
        if missing:
            raise LangNeuronsError(f"{args.neurons!r} has no neurons of {missing}; it has: {neurons.languages}")
        neurons = neurons.select(stats.languages)
    else:
        neurons = lape(stats, top_rate=args.top_rate, filter_rate=args.filter_rate,
                       activation_bar_ratio=args.activation_bar_ratio)
    return neurons, neurons.save(out / "neurons.json")


def eval_source(args) -> tuple[str, str | None]:
    """``(source, split)`` of the held-out text; call it before recording, so that a missing
    ``--eval-corpus`` fails at once."""
    source = args.eval_corpus or ("builtin" if args.corpus == "builtin" else None)
    if source is None:
        raise LangNeuronsError("--eval-corpus is required with a --corpus other than 'builtin' (held-out text, "
                               "e.g. hf:openlanguagedata/flores_plus:devtest)")
    return source, "eval" if source == "builtin" else None  # the built-in default split is the recorded one, 'stats'


def eval_corpus(args, langs: list[str]):
    """Held-out text: ``--eval-corpus``, or the built-in ``eval`` split for the built-in corpus."""
    source, split = eval_source(args)
    return load_corpus(source, languages=langs, split=split, max_sentences=args.eval_sentences)


def prompts(args) -> list[str] | None:
    """``None`` for the library's neutral prompts, ``[""]`` for BOS only, or a file's lines (as
    ``tl-langneurons steer --prompts`` reads them: one a line, an empty line is BOS only)."""
    if args.prompts == "neutral":
        return None
    if args.prompts == "bos":
        return [""]
    return read_prompts(args.prompts)


def decoding(args) -> dict:
    """Keyword arguments of :func:`steer`, :func:`steer_sweep` and :func:`steer_with`."""
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                  greedy=args.greedy, repetition_penalty=args.repetition_penalty)
    return dict(n_samples=args.n_samples, generation=generation, seed=args.seed, n_prompts=args.n_prompts,
                prompt_words=args.prompt_words)


def settings(args) -> dict:
    """The arguments of this run, for the summary (what produced these numbers)."""
    return {k: v for k, v in vars(args).items() if k != "default_languages"}


# ---------------------------------------------------------------------------------------------
# Writing


def fmt(x, spec: str) -> str:
    """``format(x, spec)``, or ``n/a`` for what a written summary holds as None (NaN, ±inf)."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def records(df: pd.DataFrame) -> list[dict]:
    return jsonable(df.to_dict(orient="records"))


def write_json(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return outputs.write_json(path, obj)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return outputs.write_csv(df, path)


def run(main) -> None:
    """``sys.exit(main())``, with an argument mistake reported in one line, as the command line does."""
    try:
        sys.exit(main())
    except LangNeuronsError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)
