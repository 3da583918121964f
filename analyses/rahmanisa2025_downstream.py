"""Rahmanisa et al. (2025), "Unveiling the Influence of Amplifying Language-Specific Neurons": the
downstream half. Amplify each language's neurons in turn at one factor and score every task
language (they used XCOPA, XWinograd, INCLUDE and FLORES), against no intervention and the same
amplification of random neurons of the same per-layer counts, on the same documents (lm-eval).

By default on Gemma 3 270M with the package's offline tasks — the cloze of every language and
English→X translation (chrF++) — for ten languages (roughly an hour on 2 CPU cores at the default
``--limit``)::

    python analyses/rahmanisa2025_downstream.py --out results/rahmanisa2025_downstream_gemma

Reusing a neuron set and statistics (e.g. those of ``tl-langneurons demo --model gemma-3-270m``)::

    python analyses/rahmanisa2025_downstream.py --stats gemma_demo/stats --neurons gemma_demo/neurons.json \\
        --out results/rahmanisa2025_downstream_gemma

Their tasks on a GPU (needs the Hub; the datasets download once)::

    python analyses/rahmanisa2025_downstream.py --model meta-llama/Llama-3.1-8B --corpus hf:openlanguagedata/flores_plus:dev \\
        --languages en,id,sw,ta,th,tr,vi,zh --tasks 'xcopa_{lang},xwinograd_{lang}' --device cuda --dtype bfloat16 \\
        --out results/rahmanisa2025_downstream_llama

``--tasks`` is a comma-separated list of lm-eval task names where ``{lang}`` stands for each of the
``--languages`` (names lm-eval lacks are skipped with a note: XCOPA has no German). The
amplification is ``--mode scale`` (``a := α·a``, default α 2) or ``--mode set`` (``a := α·v``, ``v``
the language's ``--statistic``). Writes into ``--out``: ``stats/`` (unless ``--stats``),
``neurons.json``, and ``tl-langneurons tasks``' files (``tasks.csv``, ``summary.json``,
``samples/``, ``tasks_change.{png,pdf}``: task language × amplified language, change from baseline,
the control beside it). Prints each task's baseline and the own-language change.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402
from tl_langneurons import LangNeuronsError  # noqa: E402
from tl_langneurons.outputs.measurements import write_tasks  # noqa: E402
from tl_langneurons.tasks import evaluate_tasks, task_manager  # noqa: E402

LANGUAGES = "en,de,fr,es,ru,zh,ja,ar,hi,th"
TASKS = "tlln_cloze_{lang},tlln_translate_en_{lang}"


def parse_args(argv=None):
    p = common.parser(__doc__)
    common.add_model_args(p, languages=LANGUAGES, who="the built-in tasks", max_sentences=100, batch_size=16,
                          out="results/rahmanisa2025_downstream_gemma")
    p.set_defaults(model="gemma-3-270m")
    common.add_lape_args(p, top_rate=0.01)
    p.add_argument("--tasks", default=TASKS, help=f"task names, {{lang}} = each language (default {TASKS})")
    p.add_argument("--mode", default="scale", choices=["scale", "set"], help="amplification (default scale)")
    p.add_argument("--factor", type=float, default=2.0, help="α (default 2)")
    p.add_argument("--statistic", default="mean", help="set mode: the language's statistic (default mean)")
    p.add_argument("--control", choices=["random", "none"], default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=40, help="documents per task (default 40)")
    p.add_argument("--num-fewshot", type=int, default=None)
    return p.parse_args(argv)


def task_names(template: str, langs: list[str]) -> tuple[list[str], list[str]]:
    """``(tasks that exist, names skipped)`` for every ``{lang}`` template × language."""
    wanted = [t.strip().replace("{lang}", k) for t in template.split(",") if t.strip() for k in langs]
    wanted = [t for t in dict.fromkeys(wanted) if t not in ("tlln_translate_en_en",)]
    manager = task_manager(wanted)
    return [t for t in wanted if t in manager.task_index], [t for t in wanted if t not in manager.task_index]


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    langs = common.languages(args) or common.split_list(LANGUAGES, "--languages")
    tasks, skipped = task_names(args.tasks, langs)
    if not tasks:
        raise LangNeuronsError(f"no task of {args.tasks!r} exists for the languages {langs}")
    if skipped:
        print(f"skipped (no such lm-eval task): {', '.join(skipped)}", file=sys.stderr)
    model = common.get_model(args)
    stats = common.get_stats(args, out, model, sentence_means=common.needs_sentence_means(args.statistic))
    neurons, _ = common.get_lape(args, stats, out)
    targets = [k for k in langs if neurons.counts().get(k)]
    run = evaluate_tasks(model, tasks, neurons, targets, args.mode, factor=args.factor,
                         stats=stats if args.mode == "set" else None, statistic=args.statistic,
                         control=None if args.control == "none" else "random", seed=args.seed, limit=args.limit,
                         batch_size=args.batch_size, num_fewshot=args.num_fewshot)
    summary = write_tasks(run, out, run={**common.settings(args), "tasks": tasks, "targets": targets})
    for t, b in summary["baseline"].items():
        print(f"{t}: {b['metric']} {b['value']:.3f} ± {b['stderr']:.3f}")
    if summary.get("own_delta") is not None:
        print(f"own-language change {common.fmt(summary['own_delta'], '+.3f')}, other tasks "
              f"{common.fmt(summary['other_delta'], '+.3f')}, control own {common.fmt(summary['control_own_delta'], '+.3f')}")
    return 0


if __name__ == "__main__":
    common.run(main)
