"""Gurgurov et al. (2025), "Language Arithmetics: Towards Systematic Language Neuron Identification
and Manipulation": steer generation from a source language to a target language by switching the
source's LAPE neurons off (``a := δ``, δ = 0 by default) and adding α × the target's mean
activation to the target's neurons (``a := a + α·μ_T``) — two interventions in one pass, over a
grid of α (and of δ). Each cell is measured against the same prompts without intervention and
under the same arithmetic on random neurons of the same per-layer counts.

On the built-in model and corpus (the default; several minutes on a laptop CPU)::

    python analyses/gurgurov2025_arithmetic.py --out results/gurgurov2025_builtin

Only a few pairs, and the add-only variant beside the arithmetic::

    python analyses/gurgurov2025_arithmetic.py --pairs en-de,de-ru,fr-ja --deactivate none,0 \\
        --factors 1,4,16 --out results/gurgurov2025_builtin

The paper's own setting (Llama-3.1-8B, top 1–5%, α = 1, δ = 0, greedy decoding with repetition
penalty 1.1; needs the internet, access to the gated model, and a GPU)::

    python analyses/gurgurov2025_arithmetic.py --model meta-llama/Llama-3.1-8B --corpus hf:wikimedia/wikipedia \\
        --languages en,de,fr,es,it,pt,nl,pl,ru,tr,ar,hi,zh,ja,ko --top-rate 0.01 --pack 4096 \\
        --max-sentences 100000 --factors 1 --max-new-tokens 256 --device cuda --dtype bfloat16 \\
        --batch-size 4 --out results/gurgurov2025_llama31_8b

Gurgurov judged each pair on six hand-written questions; here the default prompts are the first
words of sentences of the built-in parallel split in the source language (``--n-prompts`` of them,
so each rate has a usable Wilson interval), or the lines of a file (``--prompts FILE``). The
continuation alone (never the prompt) goes to the offline language identifier. Neuron sets are
LAPE's, identified on the recorded statistics (or ``--neurons``); μ_T is the target's mean
activation over its recorded tokens (``--statistic`` for another one).

Writes into ``--out``: ``stats/`` (unless ``--stats``), ``neurons.json``, ``steer.csv`` (every
generation: ``source, target, deactivate, factor, condition, prompt, generation, detected`` …),
``steer_summary.csv`` (per pair and cell: target-language rate under the intervention, baseline and
control, with Wilson 95% intervals), ``summary.json`` (rates averaged over pairs per cell, the
best cell, the settings) and, for more than one α, ``figures/steer_rate_vs_factor.{png,pdf}``
(one line per pair, one panel per δ). Prints the averages.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
import pandas as pd  # noqa: E402
from tl_langneurons import Intervention, LangNeuronsError  # noqa: E402
from tl_langneurons.evaluate import steer_summary, steer_with  # noqa: E402
from tl_langneurons.identify import random_like  # noqa: E402

# Built-in languages of Gurgurov's 21 that the built-in parallel split has prompts for, in four scripts.
LANGUAGES = "en,de,fr,ru,zh,ja"
PAPER = {"model": "meta-llama/Llama-3.1-8B", "alpha": 1.0, "delta": 0.0, "decoding": "greedy, repetition penalty 1.1",
         "prompts_per_pair": 6,
         "finding": "deactivating the source and adding the target's mean switches the output language more often "
                    "than replacing activations; more so for high-resource and related languages"}


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=LANGUAGES, who="this script", max_sentences=200, pack=256,
                          out="results/gurgurov2025_builtin")
    common.add_lape_args(p)
    p.add_argument("--pairs", default=None,
                   help="source-target pairs, e.g. en-de,de-ru (default: every ordered pair of the languages)")
    p.add_argument("--factors", default="1,4,16", help="α: add α × the target's statistic (Gurgurov: 1)")
    p.add_argument("--deactivate", default="0",
                   help="δ: the source's neurons are set to δ (0 = switched off; Gurgurov also -1, -1.5); "
                        "'none' leaves them alone (add only)")
    p.add_argument("--statistic", default="mean", help="the target's statistic that is added (Gurgurov: mean)")
    p.add_argument("--control", choices=["random", "none"], default="random",
                   help="the same arithmetic on random neurons of the same layer profile")
    common.add_steer_args(p, greedy=True, repetition_penalty=1.1)
    p.add_argument("--gen-batch-size", type=int, default=64, help="generations per generate call")
    return p.parse_args(argv)


def parse_pairs(text: str | None, langs: list[str]) -> list[tuple[str, str]]:
    if text is None:
        return [(s, t) for s in langs for t in langs if s != t]
    pairs = []
    for item in common.split_list(text, "--pairs"):
        parts = item.split("-")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise LangNeuronsError(f"--pairs: {item!r} is not source-target of two different languages (e.g. en-de)")
        missing = [k for k in parts if k not in langs]
        if missing:
            raise LangNeuronsError(f"--pairs: {missing[0]!r} is not among the recorded languages {langs}")
        pairs.append((parts[0], parts[1]))
    return pairs


def parse_deactivate(text: str) -> list[float | None]:
    return [None if x == "none" else common.float_list(x, "--deactivate")[0]
            for x in common.split_list(text, "--deactivate")]


def arithmetic(neurons, source: str, target: str, delta: float | None, factor: float, stats, statistic: str) -> list:
    """Source off (or set to δ), then the target's statistic added: applied in this order, so a
    neuron in both sets ends at δ + α·v, as in Gurgurov's code."""
    off = [] if delta is None else [Intervention(neurons, "zero", language=source) if delta == 0.0
                                    else Intervention(neurons, "set", value=delta, language=source)]
    return off + [Intervention(neurons, "add", factor=factor, stats=stats, statistic=statistic, language=target)]


def label(delta: float | None) -> str:
    return "none" if delta is None else f"{delta:g}"


def averages(summary: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("target_rate", "baseline_rate", "control_rate") if c in summary.columns]
    return summary.groupby(["deactivate", "factor"], sort=False)[cols].mean().reset_index()


def figure(summary: pd.DataFrame, out: Path) -> None:
    """Rate against α: one panel per source→target pair and δ."""
    from tl_langneurons.outputs import plot  # matplotlib: only when a figure is drawn

    panels = summary.assign(target=summary.source + "→" + summary.target,
                            mode=summary.deactivate.map(lambda d: "add (source kept)" if d == "none"
                                                        else f"source set to {d}, add"))
    plot.save_figure(plot.steer_rate_vs_factor(panels), out, "steer_rate_vs_factor")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    factors = common.float_list(args.factors, "--factors")
    deltas = parse_deactivate(args.deactivate)
    model = common.get_model(args)
    stats = common.get_stats(args, out, model, sentence_means=common.needs_sentence_means(args.statistic))
    pairs = parse_pairs(args.pairs, stats.languages)
    neurons, neurons_path = common.get_lape(args, stats, out)
    ctrl = random_like(neurons, args.seed) if args.control == "random" else None
    prompts = common.prompts(args)
    decoding = common.decoding(args)

    frames = []
    for source, target in pairs:
        base = None  # the prompts and seed are the pair's: one baseline serves every cell
        for delta in deltas:
            for factor in factors:
                iv = arithmetic(neurons, source, target, delta, factor, stats, args.statistic)
                cv = arithmetic(ctrl, source, target, delta, factor, stats, args.statistic) if ctrl is not None else None
                df = steer_with(model, target, iv, cv, prompts, baseline=base is None, source=source,
                                batch_size=args.gen_batch_size, **decoding)
                if base is None:
                    base = df[df.condition == "baseline"]
                else:
                    df = pd.concat([base, df], ignore_index=True)
                df.insert(0, "source", source)
                df.insert(2, "deactivate", label(delta))
                df.insert(3, "factor", factor)
                frames.append(df)
    gens = pd.concat(frames, ignore_index=True)
    summary = pd.concat([steer_summary(g.drop(columns="source")).assign(source=s, deactivate=d)
                         for (s, d), g in gens.groupby(["source", "deactivate"], sort=False)], ignore_index=True)
    first = ["source", "target", "deactivate", "factor"]
    summary = summary[first + [c for c in summary.columns if c not in first]]
    avg = averages(summary)
    best = avg.loc[avg.target_rate.idxmax()]
    # outputs.measurements.write_steer's grid cells are mode × factor × statistic × positions per target; this
    # grid also runs over sources and δ, so its tables are written here, one row per pair and cell
    common.write_csv(gens, out / "steer.csv")
    common.write_csv(summary, out / "steer_summary.csv")
    if len(factors) > 1:
        figure(summary, out / "figures")
    common.write_json({"model": stats.meta.get("model", {}).get("name", args.model), "n_pairs": len(pairs),
                       "mean_over_pairs": common.records(avg),
                       "best": {"deactivate": best.deactivate, "factor": float(best.factor),
                                "target_rate": float(best.target_rate), "baseline_rate": float(best.baseline_rate),
                                "control_rate": float(best.get("control_rate", float("nan")))},
                       "n_neurons": neurons.counts(), "neurons": str(neurons_path), "paper": PAPER,
                       "settings": common.settings(args)}, out / "summary.json")

    print(f"target-language rate, mean over {len(pairs)} source→target pairs:")
    print(avg.round(3).to_string(index=False))
    print(f"wrote {out / 'steer.csv'}, {out / 'steer_summary.csv'}, {out / 'summary.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
