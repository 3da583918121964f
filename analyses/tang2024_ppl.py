"""Tang et al. (2024, ACL), "Language-Specific Neurons: The Key to Multilingual Capabilities in Large
Language Models": the deactivation matrix. Switch off (set to 0) one language's LAPE neurons at a
time and measure the perplexity of every language's held-out text; the same with random neurons
of the same per-layer counts (the control Tang did not run).

On the built-in model and corpus (the default; a few minutes on a laptop CPU)::

    python analyses/tang2024_ppl.py --out results/tang2024_ppl_builtin

Reusing what ``tang2024_lape.py`` wrote (no recording, the same sets)::

    python analyses/tang2024_ppl.py --stats results/tang2024_builtin/stats \\
        --neurons results/tang2024_builtin/neurons.json --out results/tang2024_ppl_builtin

The paper's own setting (LLaMA-2-7B, Wikipedia, top 1%; needs the internet, access to the gated
model, and a GPU; Tang measured perplexity on held-out Wikipedia text)::

    python analyses/tang2024_ppl.py --model meta-llama/Llama-2-7b-hf --corpus hf:wikimedia/wikipedia \\
        --eval-corpus hf:wikimedia/wikipedia:20231101:train --languages en,zh,fr,es,vi,id,ja --top-rate 0.01 \\
        --pack 4096 --max-sentences 200000 --eval-sentences 500 --device cuda --dtype bfloat16 \\
        --batch-size 4 --out results/tang2024_ppl_llama2_7b

(With a non-built-in ``--corpus``, ``--eval-corpus`` names held-out text: choose text the recording
did not read.) Recording and LAPE are as in ``tang2024_lape.py`` (same defaults: 5% of the
built-in model's neurons, 256-token packed windows). Perplexity: each held-out sentence is one
sequence with BOS prepended; the NLL of tokens 1..n, never of BOS or padding; baseline,
intervention and control read exactly the same tokens.

Writes into ``--out`` (the files of ``tl-langneurons ppl``, plus the comparison): ``stats/``
(unless ``--stats``), ``neurons.json``, ``ppl.csv`` (one row per ablated × evaluated language ×
condition — ``baseline``, ``intervention``, ``control`` — with ``nll``, ``ppl``, ``n_tokens``),
``summary.json`` (diagonal vs off-diagonal and vs control, the share of rows whose own language is
the most hurt, the same per language, the settings), ``figures/ppl_change.{png,pdf}`` (the ΔNLL
heatmap with the control's beside it) and ``tang2024_ppl.json`` (issue 4's bar, the neurons per
language, the evaluated tokens, the paper's finding). Prints the ΔNLL matrices and the ratios.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
from tl_langneurons.evaluate import delta_matrix, perplexity_matrix  # noqa: E402
from tl_langneurons.outputs.measurements import write_ppl  # noqa: E402

TANG_LANGUAGES = "en,zh,fr,es,vi,id,ja"
# Tang et al. report the matrix as a figure, not as numbers: deactivating a language's neurons raises
# that language's perplexity markedly and the others' little (their Figure 4, LLaMA-2-7B).
PAPER = {"model": "meta-llama/Llama-2-7b-hf", "finding": "the diagonal dominates: each language's own perplexity "
         "rises most when its neurons are deactivated", "control": "none reported"}
# Issue 4's bar for LAPE sets with top_rate <= 0.05 on the built-in model (a record of where a run stands,
# not a test of it: small --eval-sentences give noisy numbers).
BAR = {"diag_delta_nll": 0.05, "diag_over_offdiag": 5.0, "diag_over_control": 5.0, "frac_most_hurt": 0.8}


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=TANG_LANGUAGES, who="Tang", max_sentences=300, pack=256,
                          out="results/tang2024_ppl_builtin")
    common.add_lape_args(p)
    common.add_eval_args(p, eval_sentences=100)
    p.add_argument("--control", choices=["random", "none"], default="random", help="random neurons of the same layer profile")
    p.add_argument("--seed", type=int, default=0, help="the random control's seed")
    return p.parse_args(argv)


def bar(summary: dict) -> dict:
    """Where the run stands against the bar (the written summary has None for NaN: not met)."""
    return {k: {"bar": v, "value": summary[k], "met": summary[k] is not None and summary[k] >= v} for k, v in BAR.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    common.eval_source(args)  # no held-out text named: fail before recording
    model = common.get_model(args)
    stats = common.get_stats(args, out, model)
    neurons, neurons_path = common.get_lape(args, stats, out)
    text = common.eval_corpus(args, stats.languages)
    df = perplexity_matrix(model, text, neurons, stats.languages, control=None if args.control == "none" else "random",
                           seed=args.seed, batch_size=args.batch_size)
    summary = write_ppl(df, out, run=common.settings(args), figures_dir=out / "figures")
    result = {"model": stats.meta.get("model", {}).get("name", args.model), "bar_issue_4": bar(summary),
              "n_neurons": neurons.counts(), "neurons": str(neurons_path),
              "eval_tokens": {r.evaluated: int(r.n_tokens) for r in df[df.condition == "baseline"]
                              .drop_duplicates("evaluated").itertuples()},
              "paper": PAPER}
    common.write_json(result, out / "tang2024_ppl.json")

    for c in [c for c in ("intervention", "control") if c in summary["conditions"]]:
        print(f"ΔNLL (nats), {c}: rows = switched off, columns = evaluated")
        print(delta_matrix(df, c).round(4).to_string())
    f = common.fmt
    s = summary
    print(f"diagonal {f(s['diag_delta_nll'], '+.4f')} nats, off-diagonal {f(s['offdiag_delta_nll'], '+.4f')} "
          f"(ratio {f(s['diag_over_offdiag'], '.2f')}); control diagonal {f(s['control_diag_delta_nll'], '+.4f')} "
          f"(ratio {f(s['diag_over_control'], '.2f')}); own language most hurt in {f(s['frac_most_hurt'], '.0%')} of rows")
    print(f"wrote {out / 'ppl.csv'}, {out / 'summary.json'}, {out / 'tang2024_ppl.json'}, {out / 'figures'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
