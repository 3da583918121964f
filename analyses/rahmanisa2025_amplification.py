"""Rahmanisa et al. (2025), "Unveiling the Influence of Amplifying Language-Specific Neurons":
amplify a target language's neurons by a factor and measure (1) how often generation switches to
the target language and (2) the Language Steering Shift (LSS) on parallel facts — the share of
facts, prompted in a source language, whose target-language answer gains log-probability against
the source-language answer under the amplification.

Two amplifications, over one factor grid (``--modes``, ``--factors``):

* ``scale``: ``a := α·a`` (α = 1 is no intervention: its LSS is 0 and its rate the baseline's);
* ``set``: ``a := α·v``, ``v`` the target's maximum (``--statistic``; or median) of its
  per-sentence mean activations, as Rahmanisa set neurons to a statistic of the language.

On the built-in model and corpus (the default; several minutes on a laptop CPU)::

    python analyses/rahmanisa2025_amplification.py --out results/rahmanisa2025_builtin

Another model, scale only, on mLAMA-style facts of your own (``tl_langneurons.facts/1`` JSON, see
``tl_langneurons.evaluate.load_facts``)::

    python analyses/rahmanisa2025_amplification.py --model Qwen/Qwen2.5-0.5B --corpus hf:openlanguagedata/flores_plus:dev \\
        --eval-facts my_facts.json --modes scale --factors 1,2,5,10 --out results/rahmanisa2025_qwen05b

Statistics are recorded one sentence per sequence, with per-sentence means (Rahmanisa counted
sentence spans); neuron sets are LAPE's (``--neurons`` to reuse a set). Each amplification is
also applied to random neurons of the same per-layer counts (the control), and every condition
reads the same prompts with the same seed. LSS runs for every ordered pair of languages that the
facts cover (the bundled fixture: en, de, fr, es, ru); steering from neutral prompts (the first
words of built-in parallel sentences in the other languages) for every language.

Writes into ``--out`` (``steer/`` and ``lss/`` as ``tl-langneurons steer`` and ``lss`` write them):
``stats/`` (unless ``--stats``), ``neurons.json``, ``steer/steer.csv`` (every generation) and
``steer/summary.json`` (rates with Wilson 95% intervals per target in every mode × factor cell),
``lss/lss.csv`` (every fact × condition) and ``lss/summary.json`` (LSS with Wilson intervals per
source × target × mode × factor, intervention and control), ``figures/steer_rate_vs_factor.{png,pdf}``
and ``summary.json`` (per mode and factor: mean rates and mean LSS of the intervention and of the
control; the settings). Prints the per-factor table.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
import pandas as pd  # noqa: E402
from tl_langneurons import LangNeuronsError  # noqa: E402
from tl_langneurons.evaluate import load_facts, lss, lss_summary, steer_summary, steer_sweep  # noqa: E402
from tl_langneurons.outputs.measurements import write_lss, write_steer  # noqa: E402

LANGUAGES = "en,de,fr,es,ru"  # the languages of the bundled facts fixture
MODES = ("scale", "set")
PAPER = {"amplification": "a := α·a, or a := α × a statistic (max / median of sentence means) of the language",
         "metric": "LSS: share of facts whose Δ = log P(object_T | prompt_L) − log P(object_L | prompt_L) rises"}


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=LANGUAGES, who="the facts fixture", max_sentences=200, batch_size=32,
                          out="results/rahmanisa2025_builtin")
    common.add_lape_args(p)
    p.add_argument("--modes", default="scale,set", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--factors", default="1,2,5,10", help="amplification factors α")
    p.add_argument("--statistic", default="max",
                   help="set mode: the target's statistic (max / median / min of sentence means, mean, q0.9 …)")
    p.add_argument("--control", choices=["random", "none"], default="random",
                   help="the same amplification on random neurons of the same layer profile")
    p.add_argument("--eval-facts", default=None, help="facts for LSS (default: the bundled fixture)")
    p.add_argument("--max-facts", type=int, default=None, help="the first N facts only")
    common.add_steer_args(p)
    p.add_argument("--gen-batch-size", type=int, default=64, help="generations per generate call")
    return p.parse_args(argv)


def lss_languages(items: list[dict], langs: list[str]) -> list[str]:
    return [k for k in langs if any(k in it["prompt"] and k in it["object"] for it in items)]


def per_factor(steer_sum: pd.DataFrame, lss_sum: pd.DataFrame | None) -> pd.DataFrame:
    rate_cols = [c for c in ("target_rate", "baseline_rate", "control_rate") if c in steer_sum.columns]
    table = steer_sum.groupby(["mode", "factor"], sort=False)[rate_cols].mean()
    if lss_sum is not None and len(lss_sum):
        by = lss_sum.pivot_table(index=["mode", "factor"], columns="condition", values="lss", aggfunc="mean")
        by = by.rename(columns=lambda c: "lss" if c == "intervention" else f"lss_{c}")
        table = table.join(by[[c for c in ("lss", "lss_control") if c in by.columns]])
    return table.reset_index()


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    modes = common.split_list(args.modes, "--modes")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise LangNeuronsError(f"--modes: unknown mode {bad[0]!r}; allowed: {', '.join(MODES)}")
    factors = common.float_list(args.factors, "--factors")
    if args.max_facts is not None and args.max_facts < 1:
        raise LangNeuronsError(f"--max-facts must be a positive integer, got {args.max_facts}")
    items = load_facts(args.eval_facts)[:args.max_facts]
    model = common.get_model(args)
    sentence_means = "set" in modes and common.needs_sentence_means(args.statistic)
    stats = common.get_stats(args, out, model, sentence_means=sentence_means)
    neurons, neurons_path = common.get_lape(args, stats, out)
    control = None if args.control == "none" else "random"
    stats_for = stats if "set" in modes else None

    run = common.settings(args)
    gens = steer_sweep(model, neurons, stats.languages, factors, modes, common.prompts(args), stats=stats_for,
                       statistic=args.statistic, control=control, batch_size=args.gen_batch_size, **common.decoding(args))
    write_steer(gens, out / "steer", run=run, figures_dir=out / "figures")

    langs = lss_languages(items, stats.languages)
    pairs = [(s, t) for t in langs for s in langs if s != t]
    if pairs:
        frames = [lss(model, neurons, items, s, t, factor=f, stats=stats_for, mode=m, statistic=args.statistic,
                      control=control, seed=args.seed, batch_size=args.batch_size)
                  for s, t in pairs for m in modes for f in factors]
        facts = pd.concat(frames, ignore_index=True)
        write_lss(facts, out / "lss", run=run)
        lss_sum = lss_summary(facts)
    else:
        lss_sum = None
        print("no two of the languages are covered by the facts: LSS skipped", file=sys.stderr)
    table = per_factor(steer_summary(gens), lss_sum)
    common.write_json({"model": stats.meta.get("model", {}).get("name", args.model), "per_factor": common.records(table),
                       "lss_pairs": [f"{s}-{t}" for s, t in pairs], "n_facts": len(items),
                       "n_neurons": neurons.counts(), "neurons": str(neurons_path), "paper": PAPER,
                       "settings": run}, out / "summary.json")

    print(f"mean over {len(stats.languages)} targets (steering) and {len(pairs)} source→target pairs (LSS):")
    print(table.round(3).to_string(index=False))
    print(f"wrote {out / 'steer'}" + (f", {out / 'lss'}" if pairs else "") + f", {out / 'summary.json'}, "
          f"{out / 'figures'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
