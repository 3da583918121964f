"""Kojima et al. (2024, NAACL), "On the Multilingual Ability of Decoder-based Pre-trained Language
Models: Finding and Controlling Language-Specific Neurons": expert units by average precision, end
to end — record → identify → analyse → figures.

On the built-in model and corpus (the default; a minute or two on a laptop CPU)::

    python analyses/kojima2024_experts.py --out results/kojima2024_builtin

The paper's own setting (XGLM-564M, FLORES+ sentences, 500 positive and 2,500 negative sentences
per language, the top 1,000 and bottom 1,000 units by AP; needs the internet)::

    python analyses/kojima2024_experts.py --model facebook/xglm-564M --corpus hf:openlanguagedata/flores_plus:dev \\
        --languages en,de,fr,es,zh,ja --n 2000 --max-sentences 500 --out results/kojima2024_xglm564m

(FLORES+ is gated on the Hugging Face hub: accept its terms and log in first. ``--stats DIR`` skips
recording and reuses statistics recorded with per-sentence means.)

Kojima's units are every output of every linear projection — the attention's q, k, v and o and
the MLP's projections (gate, up, down on a gated MLP; fc1, fc2 on XGLM's) — and this script reads
exactly that set by default (``--site linear``, one forward pass; ``--site act`` for MLP neurons
only). A unit's response to a sentence is its mean output over the sentence's tokens, BOS
included as in Kojima's code (``--no-bos`` leaves it out, the package's default elsewhere); each
unit gets the average precision of its responses for "the sentence is in language k", ranked over
all units of the model at once; the top n/2 and the bottom n/2 are language k's experts. The
defaults suit the built-in model: n = 260 units per language is 0.9% of its 29,184 linear units
(6 layers × (4 × 256 + 3 × 1,792)), the share Kojima's 2,000 is of XGLM-564M's 221,184
(24 × (4 × 1,024 + 4,096 + 1,024)).

Writes into ``--out``: ``stats/``, ``neurons.json``, ``analysis/`` (CSV tables and
``summary.json`` with the relatedness tests), ``figures/`` (PNG + PDF), and ``kojima2024.json``:
the paper's headline findings next to ours. Nothing about the model's result is hard-coded.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # analyses/_common.py, also when loaded from a file

import _common as common  # noqa: E402
from tl_langneurons import analysis  # noqa: E402
from tl_langneurons.identify import ap_experts_all  # noqa: E402
from tl_langneurons.outputs.tables import write_analysis, write_figures  # noqa: E402
from tl_langneurons.outputs import atomic_write_text  # noqa: E402

KOJIMA_LANGUAGES = "en,de,fr,es,zh,ja"
# Kojima et al.'s findings (abstract and docs/methods.md#ap-experts): overlap between languages' units < 5%; units
# mainly in the first and last few layers.
PAPER = {
    "model": "facebook/xglm-564M",
    "n_units_per_language": 2000,
    "max_overlap_between_languages": "< 0.05",
    "placement": "mainly the first and last few layers",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = common.parser(__doc__)
    common.add_model_args(p, languages=KOJIMA_LANGUAGES, who="Kojima", max_sentences=200, batch_size=32,
                          out="results/kojima2024_builtin")
    p.set_defaults(site="linear")  # Kojima's unit set: every linear output
    p.add_argument("--n", type=int, default=260, help="units per language, half top and half bottom (Kojima: 2000)")
    p.add_argument("--no-bos", dest="bos_in_sentence_means", action="store_false",
                   help="leave BOS out of each sentence's mean (Kojima counted it)")
    p.add_argument("--n-positive", type=int, default=500, help="sentences of the language (Kojima: 500)")
    p.add_argument("--n-negative", type=int, default=2500, help="sentences of the others together (Kojima: 2500)")
    p.add_argument("--permutations", type=int, default=10000, help="permutations of the relatedness tests")
    return p.parse_args(argv)


def compare_with_paper(neurons, summary: dict) -> dict:
    pairs = analysis.overlap(neurons)
    distinct = pairs[pairs.lang_a < pairs.lang_b]
    # every set has n units, so the overlap coefficient is the shared share of a set
    worst = distinct.sort_values("overlap_coefficient", ascending=False).head(1)
    layers = summary["layers"]
    ours = {
        "model": summary["model"],
        "n_units_per_language": neurons.params["n"],
        "site": neurons.site,
        "share_of_units_per_language": neurons.params["n"] / (neurons.n_layers * neurons.d_mlp),
        # sentences each language's AP was computed on (fewer than asked where fewer were recorded)
        "sentences_used": {k: {"positive": u[k], "negative": sum(v for o, v in u.items() if o != k)}
                           for k, u in neurons.params["sentences_used"].items()},
        "max_overlap_between_languages": float(worst.overlap_coefficient.iloc[0]) if len(worst) else None,
        "max_overlap_pair": f"{worst.lang_a.iloc[0]}-{worst.lang_b.iloc[0]}" if len(worst) else None,
        "mean_overlap_between_languages": float(distinct.overlap_coefficient.mean()) if len(distinct) else None,
        "layers_per_quarter": layers["layers_per_quarter"],
        "share_in_first_quarter_of_layers": layers["share_first_quarter"],
        "share_in_last_quarter_of_layers": layers["share_last_quarter"],
        "union_per_layer": layers["union_per_layer"],
        "relatedness_p_values": {f"{t}/{by}": r.get("p_value") for t, g in summary["relatedness"]["tests"].items()
                                 for by, r in g.items()},
    }
    return {"paper": PAPER, "ours": ours}


def experts_per_part(neurons, stats) -> dict | None:
    """How many of each language's experts lie in each part (q, k, v, o, gate, up, down) of a
    layer's units, where the statistics record the layout (sites with several parts)."""
    layout = (stats.meta.get("units") or {}).get("layout") or []
    if len(layout) < 2:
        return None
    out = {}
    for lang in neurons.languages:
        counts = {p["part"]: 0 for p in layout}
        for _, j in neurons.neurons[lang]:
            part = next(p for p in layout if p["offset"] <= j < p["offset"] + p["width"])
            counts[part["part"]] += 1
        out[lang] = counts
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    stats = common.get_stats(args, out, sentence_means=True)  # AP ranks sentences' mean activations
    neurons = ap_experts_all(stats, None, n=args.n, n_positive=args.n_positive, n_negative=args.n_negative)
    neurons_path = neurons.save(out / "neurons.json")
    summary = write_analysis(neurons, out / "analysis", stats, metric="overlap_coefficient",
                             n_permutations=args.permutations, source=str(neurons_path))
    # no stats here: the entropy figure is LAPE's quantity, not what AP ranks by
    figures = write_figures(neurons, out / "figures", metric="overlap_coefficient")
    comparison = compare_with_paper(neurons, summary)
    comparison["ours"]["bos_in_sentence_means"] = bool(stats.meta.get("options", {}).get("bos_in_sentence_means"))
    comparison["ours"]["experts_per_part"] = experts_per_part(neurons, stats)
    atomic_write_text(out / "kojima2024.json", json.dumps(comparison, indent=1) + "\n")
    print(json.dumps(comparison, indent=1))
    print(f"wrote {neurons_path}, {out / 'analysis'}, {len(figures)} figure files in {out / 'figures'}, "
          f"{out / 'kojima2024.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run(main)
