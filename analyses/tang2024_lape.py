"""Tang et al. (2024, ACL), "Language-Specific Neurons: The Key to Multilingual Capabilities in Large
Language Models": LAPE end to end — record → identify → analyse → figures.

On the built-in model and corpus (the default; a minute or two on a laptop CPU)::

    python analyses/tang2024_lape.py --out results/tang2024_builtin

The paper's own setting (LLaMA-2-7B, Wikipedia packed into 4,096-token rows, top 1%; needs the
internet, access to the gated model, and a GPU)::

    python analyses/tang2024_lape.py --model meta-llama/Llama-2-7b-hf --corpus hf:wikimedia/wikipedia \\
        --languages en,zh,fr,es,vi,id,ja --top-rate 0.01 --pack 4096 --max-sentences 200000 \\
        --device cuda --dtype bfloat16 --batch-size 4 --out results/tang2024_llama2_7b

(``--max-sentences`` counts Wikipedia paragraphs per language: the text budget. An interrupted
recording continues with ``--resume``; ``--stats DIR`` skips recording and reuses statistics.)

The defaults suit the built-in model: it has 6 × 1,792 neurons, so Tang's 1% would leave a handful
per language; 5% keeps ~540. It was trained on 256-token rows, so text is packed into 256-token
windows (Tang packs to the model's context). Everything else is Tang's: activation probability of
``act`` = φ(gate x) > 0 over tokens, τ and the activation bar at the 95th percentile of all ``p``,
global ranking by entropy, multi-language assignment.

Writes into ``--out``: ``stats/`` (the recording), ``neurons.json``, ``analysis/`` (CSV tables and
``summary.json`` with the relatedness tests), ``figures/`` (PNG + PDF), and ``tang2024.json``:
the paper's headline numbers for LLaMA-2-7B next to ours. The model's numbers are not hard-coded
anywhere; they come from the run.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
from tl_langneurons.identify import lape  # noqa: E402
from tl_langneurons.outputs.tables import write_analysis, write_figures  # noqa: E402
from tl_langneurons.outputs import atomic_write_text  # noqa: E402

TANG_LANGUAGES = "en,zh,fr,es,vi,id,ja"
# Tang et al.'s released LLaMA-2-7B sets (docs/methods.md#lape): 1.00% of neurons; ~32% shared by >= 2
# languages; highest Jaccard overlaps; 22% of the neurons in layer 0, the rest in the top layers.
PAPER = {
    "model": "meta-llama/Llama-2-7b-hf",
    "share_of_neurons": 0.01,
    "share_shared_by_2_or_more": 0.32,
    "top_jaccard_pairs": {"ja-zh": 0.23, "es-fr": 0.22, "id-vi": 0.21},  # pairs named in alphabetical order, as ours
    "share_in_layer_0": 0.22,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.parser(__doc__)
    common.add_model_args(p, languages=TANG_LANGUAGES, who="Tang", max_sentences=300, pack=256,
                          out="results/tang2024_builtin")
    common.add_lape_args(p, reuse=False)
    p.add_argument("--permutations", type=int, default=10000, help="permutations of the relatedness tests")
    return p.parse_args(argv)


def compare_with_paper(summary: dict) -> dict:
    jaccard = {d["pair"]: d["jaccard"] for d in summary["top_jaccard_pairs"]}
    per_layer = summary["layers"]["union_per_layer"]
    union = summary["union"]
    ours = {
        "model": summary["model"],
        "share_of_neurons": summary["params"]["n_kept"] / (summary["n_layers"] * summary["d_mlp"]),
        "share_shared_by_2_or_more": summary["share_shared_by_2_or_more"],
        "top_jaccard_pairs": jaccard,
        "share_in_layer_0": per_layer[0] / union if union else None,
        "share_in_last_quarter_of_layers": summary["layers"]["share_last_quarter"],
        "relatedness_p_values": {f"{t}/{by}": r.get("p_value") for t, g in summary["relatedness"]["tests"].items()
                                 for by, r in g.items()},
    }
    return {"paper": PAPER, "ours": ours}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    stats = common.get_stats(args, out)
    neurons = lape(stats, top_rate=args.top_rate, filter_rate=args.filter_rate,
                   activation_bar_ratio=args.activation_bar_ratio)
    neurons_path = neurons.save(out / "neurons.json")
    summary = write_analysis(neurons, out / "analysis", stats, n_permutations=args.permutations,
                             source=str(neurons_path))
    figures = write_figures(neurons, out / "figures", stats)
    comparison = compare_with_paper(summary)
    atomic_write_text(out / "tang2024.json", json.dumps(comparison, indent=1) + "\n")
    print(json.dumps(comparison, indent=1))
    print(f"wrote {neurons_path}, {out / 'analysis'}, {len(figures)} figure files in {out / 'figures'}, "
          f"{out / 'tang2024.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
