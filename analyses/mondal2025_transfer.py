"""Mondal et al. (2025), "Language-specific neurons do not facilitate cross-lingual transfer": fine-tune
with the update restricted to a target language's neurons while training on a source-language
task, and ask whether the target language (and the others) gain more than under the controls.

Runs, each trained from the same base with the same seed and data:

* ``masked-lora`` on the target's neurons (LoRA on ``gate_proj`` masked to their rows, plus
  unmasked attention LoRA, as Mondal), and on random neurons with the same count per layer;
* ``selected-rows`` (Gurgurov et al. 2025: the neurons' rows of gate/up and columns of down, full
  rank), on the target's neurons and on random ones;
* ``attention-only`` (Mondal's "null") and ``full-lora`` (unmasked).

Every evaluation task is scored on the base model and on each fine-tuned model (merged) on the same
documents; the table holds the change from the base with a paired standard error.

By default on Gemma 3 270M with the built-in tasks: train on the English cloze's train split (200
items), evaluate the cloze of English and five other languages, neurons of each of them in turn as
the target is ``--target`` (default German)::

    python analyses/mondal2025_transfer.py --out results/mondal2025_gemma

Reusing a neuron set (e.g. from ``tl-langneurons demo --model gemma-3-270m``)::

    python analyses/mondal2025_transfer.py --stats gemma_demo/stats --neurons gemma_demo/neurons.json \\
        --out results/mondal2025_gemma

Writes into ``--out``: ``stats/`` (unless ``--stats``), ``neurons.json``, each run's adapter and
merged model (``<method>[-random]/``), ``transfer.csv`` (method × condition × task × metric: value,
base value, change, paired stderr), ``summary.json`` and the figures ``loss`` and ``transfer``.
Prints the mean change per run, over all evaluation languages and over the target's own task.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
from tl_langneurons.finetune import FinetuneConfig  # noqa: E402
from tl_langneurons.finetune.methods import METHODS  # noqa: E402
from tl_langneurons.finetune.transfer import run_name, training_examples, transfer  # noqa: E402
from tl_langneurons.outputs.measurements import write_transfer  # noqa: E402

LANGUAGES = "en,de,fr,ru,zh,ar"


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=LANGUAGES, who="the evaluation", max_sentences=100, batch_size=16,
                          out="results/mondal2025_gemma")
    p.set_defaults(model="gemma-3-270m")
    common.add_lape_args(p, top_rate=0.01)
    p.add_argument("--target", default="de", help="whose neurons the update is restricted to (default de)")
    p.add_argument("--train", default="tlln_cloze_en", help="training data: an lm-eval task (its train split) or "
                   "text:<lang> (default tlln_cloze_en)")
    p.add_argument("--train-limit", type=int, default=None, help="the first N training examples (default all)")
    p.add_argument("--eval-tasks", default="tlln_cloze_{lang}", help="evaluation tasks, {lang} = each language")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--no-random-control", action="store_true", help="skip the random-mask runs")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=40, help="documents per evaluation task (default 40)")
    p.add_argument("--metric", default="acc")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    langs = common.languages(args) or common.split_list(LANGUAGES, "--languages")
    model = common.get_model(args)
    stats = common.get_stats(args, out, model)
    neurons, _ = common.get_lape(args, stats, out)
    tasks = [t.strip().replace("{lang}", k) for t in args.eval_tasks.split(",") if t.strip() for k in langs]
    examples = training_examples(model.tokenizer, args.train, args.train_limit)
    config = FinetuneConfig(lr=args.lr, epochs=args.epochs, batch_size=args.train_batch_size, seed=args.seed)
    run = transfer(model, neurons, args.target, examples, list(dict.fromkeys(tasks)),
                   common.split_list(args.methods, "--methods"), random_control=not args.no_random_control,
                   config=config, limit=args.limit, batch_size=args.batch_size, out=out)
    source = args.train[len("text:"):] if args.train.startswith("text:") else args.train.rsplit("_", 1)[-1]
    losses = {run_name(m, c): a.losses for (m, c), a in run.adapters.items()}
    summary = write_transfer(run.table, losses, out, run={**common.settings(args), "tasks": tasks}, source=source,
                             metric=args.metric)
    t = run.table[run.table.metric == args.metric]
    for key, v in summary["by_run"].items():
        method, condition = key.split("/")
        own = t[(t.method == method) & (t.condition == condition) & (t.language == args.target)]
        print(f"{key}: mean change {common.fmt(v['mean_delta'], '+.3f')}, transfer (not {source}) "
              f"{common.fmt(v['transfer_delta'], '+.3f')}, {args.target} "
              f"{common.fmt(float(own.delta.mean()) if len(own) else None, '+.3f')}")
    return 0


if __name__ == "__main__":
    common.run(main)
