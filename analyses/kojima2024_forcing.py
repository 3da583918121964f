"""Kojima et al. (2024, NAACL), "On the Multilingual Ability of Decoder-based Pre-trained Language
Models: Finding and Controlling Language-Specific Neurons": force a language's expert units (by
average precision) to their median and see whether generation switches to that language.

For each target language, its ``n`` experts (the top n/2 by AP, which fire more for it, and the
bottom n/2, which fire less) are set to the median of their per-sentence mean activations on the
target's sentences (``set`` with ``statistic='median'``, at every position), and text is
generated unconditionally (from BOS, as Kojima did) under the forcing, without it (baseline) and
with random units of the same per-layer counts forced to *their* medians on the target (control).
For comparison with Tang et al.'s LAPE neurons, the same experts are also switched off one
language at a time and every language's held-out perplexity is measured (Tang's deactivation
matrix, with its random control).

On the built-in model and corpus (the default; a few minutes on a laptop CPU)::

    python analyses/kojima2024_forcing.py --out results/kojima2024_forcing_builtin

Reusing statistics recorded with per-sentence means (e.g. by ``kojima2024_experts.py``), over
numbers of experts::

    python analyses/kojima2024_forcing.py --stats results/kojima2024_builtin/stats --n 20,200,2000 \\
        --out results/kojima2024_forcing_builtin

The paper's own setting (XGLM-564M, FLORES+, 500 positive and 2,500 negative sentences, 2,000
units, 100 samples at T = 0.8; FLORES+ is gated on the hub)::

    python analyses/kojima2024_forcing.py --model facebook/xglm-564M --corpus hf:openlanguagedata/flores_plus:dev \\
        --eval-corpus hf:openlanguagedata/flores_plus:devtest --languages en,de,fr,es,zh,ja --n 2000 \\
        --max-sentences 500 --n-samples 100 --max-new-tokens 64 --out results/kojima2024_forcing_xglm564m

Kojima sampled with nucleus sampling (top-p 0.9), which the package's generation does not offer;
here it is temperature sampling (``--temperature``, optionally ``--top-k``). The defaults suit the
built-in model: n = 200 units per language is ~2% of its 10,752, as 2,000 is of XGLM-564M's MLP
units.

Writes into ``--out``: ``stats/`` (unless ``--stats``) and, per number of experts N, a folder
``nN/`` with ``neurons.json``, ``steer/`` (``steer.csv``: every generation; ``summary.json``:
target-language rate with Wilson 95% intervals under forcing, baseline and control, per target
and factor; as ``tl-langneurons steer`` writes them) and ``ppl/`` (the deactivation matrix:
``ppl.csv``, ``summary.json``, ``ppl_change.{png,pdf}``; as ``tl-langneurons ppl``); and
``summary.json`` (mean rates per N and factor, the deactivation ratios per N, the paper's figure,
the settings). Prints both.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
import pandas as pd  # noqa: E402
from tl_langneurons import LangNeuronsError  # noqa: E402
from tl_langneurons.evaluate import perplexity_matrix, steer_summary, steer_sweep  # noqa: E402
from tl_langneurons.identify import ap_experts_all  # noqa: E402
from tl_langneurons.outputs.measurements import write_ppl, write_steer  # noqa: E402

KOJIMA_LANGUAGES = "en,de,fr,es,zh,ja"
# perplexity_summary's headline numbers, copied into summary.json per number of experts
DEACTIVATION_KEYS = ("diag_delta_nll", "offdiag_delta_nll", "control_diag_delta_nll", "diag_over_offdiag",
                     "diag_over_control", "frac_most_hurt")
PAPER = {"model": "facebook/xglm-564M", "n_units": 2000, "forcing": "median of the target language's responses",
         "target_rate": "72-99% of generations in the target language (varies by language)"}


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=KOJIMA_LANGUAGES, who="Kojima", max_sentences=200, batch_size=32,
                          out="results/kojima2024_forcing_builtin")
    p.add_argument("--n", default="200", help="experts per language, half top and half bottom; a comma-separated "
                                              "list for several (Kojima: 2000)")
    p.add_argument("--n-positive", type=int, default=500, help="sentences of the language (Kojima: 500)")
    p.add_argument("--n-negative", type=int, default=2500, help="sentences of the others together (Kojima: 2500)")
    p.add_argument("--statistic", default="median", help="the forced value: median (Kojima), max, min, mean, q0.9 …")
    p.add_argument("--factors", default="1", help="force to factor × the statistic (Kojima: 1)")
    p.add_argument("--control", choices=["random", "none"], default="random",
                   help="random units of the same layer profile, forced the same way")
    common.add_steer_args(p, prompts="bos", n_samples=32)
    p.add_argument("--gen-batch-size", type=int, default=64, help="generations per generate call")
    common.add_eval_args(p, eval_sentences=100)
    return p.parse_args(argv)


def n_list(text: str) -> list[int]:
    out = []
    for x in common.split_list(text, "--n"):
        if not x.isdigit() or int(x) < 2 or int(x) % 2:
            raise LangNeuronsError(f"--n: {x!r} is not an even number of units ≥ 2")
        out.append(int(x))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    common.eval_source(args)  # no held-out text named: fail before recording
    ns = n_list(args.n)
    factors = common.float_list(args.factors, "--factors")
    control = None if args.control == "none" else "random"
    model = common.get_model(args)
    stats = common.get_stats(args, out, model, sentence_means=True)  # AP ranks sentences' mean activations
    langs = stats.languages
    text = common.eval_corpus(args, langs)
    prompts = common.prompts(args)

    run = common.settings(args)
    rates, sets, deactivation = [], {}, {}
    for n in ns:
        experts = ap_experts_all(stats, langs, n=n, n_positive=args.n_positive, n_negative=args.n_negative,
                                 seed=args.seed)
        sets[n] = str(experts.save(out / f"n{n}" / "neurons.json"))
        gens = steer_sweep(model, experts, langs, factors, ["set"], prompts, stats=stats, statistic=args.statistic,
                           control=control, batch_size=args.gen_batch_size, **common.decoding(args))
        write_steer(gens, out / f"n{n}" / "steer", run=run)
        rate_cols = ["target_rate", "baseline_rate"] + (["control_rate"] if control else [])
        rates.append(steer_summary(gens).groupby("factor", sort=False)[rate_cols].mean().reset_index()
                     .assign(n=n))
        matrix = perplexity_matrix(model, text, experts, langs, control=control, seed=args.seed,
                                   batch_size=args.batch_size)
        deactivation[n] = write_ppl(matrix, out / f"n{n}" / "ppl", run=run)
    table = pd.concat(rates, ignore_index=True)
    table = table[["n"] + [c for c in table.columns if c != "n"]]
    common.write_json({"model": stats.meta.get("model", {}).get("name", args.model), "steering": common.records(table),
                       "deactivation": {n: {k: d[k] for k in DEACTIVATION_KEYS} for n, d in deactivation.items()},
                       "neurons": sets, "paper": PAPER, "settings": run}, out / "summary.json")

    f = common.fmt
    print(f"forcing the experts to {args.statistic}: target-language rate, mean over {len(langs)} languages")
    print(table.round(3).to_string(index=False))
    for n, s in deactivation.items():
        print(f"n={n}, switched off: own language ΔNLL {f(s['diag_delta_nll'], '+.4f')} nats, others "
              f"{f(s['offdiag_delta_nll'], '+.4f')} (ratio {f(s['diag_over_offdiag'], '.2f')}), random control "
              f"{f(s['control_diag_delta_nll'], '+.4f')} (ratio {f(s['diag_over_control'], '.2f')}); own language "
              f"most hurt in {f(s['frac_most_hurt'], '.0%')} of rows")
    print(f"wrote {', '.join(str(out / f'n{n}') for n in ns)}, {out / 'summary.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
