"""The fine-tuning command: finetune (neuron-restricted training, its controls, and transfer)."""

import sys

from .._io import check_out_dir
from ..errors import LangNeuronsError, choices
from .args import positive

CONTROLS = ("random", "attention-only", "full-lora")


def _runs(method: str, random_control: bool, controls: list[str]) -> list[tuple[str, str]]:
    """``(method, condition)`` of every run: the method (on the language's neurons, or on random
    ones with --random-control) and the controls."""
    masked = method in ("masked-lora", "selected-rows")
    runs = [(method, "random" if random_control else ("neurons" if masked else "none"))]
    for c in controls:
        run = (method, "random") if c == "random" else (c, "none")
        if c == "random" and not masked:
            continue  # an unmasked method has no mask to randomise
        if run not in runs:
            runs.append(run)
    return runs


def run_name(method: str, condition: str) -> str:
    return f"{method}-random" if condition == "random" else method


def cmd_finetune(args) -> int:
    from ..finetune import FinetuneConfig, merged_folder, neuron_mask, random_mask
    from ..finetune.methods import METHODS, MLP
    from ..finetune.train import finetune
    from ..finetune.transfer import training_examples
    from ..outputs.measurements import write_transfer
    from ..sources import resolve_source
    from .measure import _load_for

    if args.method not in METHODS:
        raise LangNeuronsError(f"unknown --method {args.method!r}; allowed: {', '.join(METHODS)}")
    controls = [] if args.controls in ("none", "") else [c.strip() for c in args.controls.split(",") if c.strip()]
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise LangNeuronsError(f"unknown --controls entry {bad[0]!r}; allowed: {choices(CONTROLS)} or 'none'")
    matrices = None
    if args.matrices is not None:
        matrices = tuple(m.strip() for m in args.matrices.split(",") if m.strip())
        if any(m not in MLP for m in matrices):
            raise LangNeuronsError(f"--matrices takes names of {choices(MLP)}, got {args.matrices!r}")
    for name in ("train_limit", "eval_limit"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    config = FinetuneConfig(method=args.method, matrices=matrices, attention=not args.no_attention, r=args.r,
                            alpha=args.alpha, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                            max_length=args.max_length, seed=args.seed)
    eval_tasks = [t.strip() for t in args.eval_tasks.split(",") if t.strip()] if args.eval_tasks else []
    out = check_out_dir(args.out)
    resolve_source(args.model)
    from ..neurons import LanguageNeurons

    neurons = LanguageNeurons.load(args.neurons)
    mask = neuron_mask(neurons, [k.strip() for k in args.language.split(",")])
    model = _load_for(args, neurons)  # refuses a neuron set found on other weights
    examples = training_examples(model.tokenizer, args.train, args.train_limit, args.max_length)
    runs = _runs(args.method, args.random_control, controls)
    losses, rows = {}, []
    base = None
    if eval_tasks:
        from ..tasks import evaluate_tasks

        base = evaluate_tasks(model, eval_tasks, limit=args.eval_limit, batch_size=args.eval_batch_size,
                              progress=False)
    for method, condition in runs:
        from dataclasses import replace

        name = run_name(method, condition)
        cfg = replace(config, method=method, matrices=matrices)
        the_mask = {"neurons": mask, "random": random_mask(mask, args.seed)}.get(condition)
        adapter = finetune(model, examples, cfg, the_mask,
                           train_info={"train": args.train, "neurons": str(args.neurons),
                                       "language": args.language, "condition": condition})
        adapter.save(out / name)
        losses[name] = adapter.losses
        print(f"{name}: loss {adapter.losses[0]:.3f} -> {adapter.losses[-1]:.3f} over {len(adapter.losses)} steps"
              + (f", {adapter.mask.count()} neurons" if adapter.mask is not None else ""))
        if args.merged or eval_tasks:
            folder = merged_folder(adapter, out / name / "merged")
            if eval_tasks:
                rows += _transfer_rows(folder, method, condition, eval_tasks, base, args)
    if eval_tasks:
        import pandas as pd

        from ..finetune.transfer import COLUMNS

        source = args.train[len("text:"):] if args.train.startswith("text:") else None
        if source is None:
            from ..tasks import task_language

            source = task_language(args.train)
        summary = write_transfer(pd.DataFrame(rows, columns=COLUMNS), losses, out, source=source, metric=args.metric,
                                 run={"model": args.model, "neurons": str(args.neurons), "language": args.language,
                                      "train": args.train, "config": config.as_dict(), "eval_tasks": eval_tasks,
                                      "eval_limit": args.eval_limit, "runs": [run_name(*r) for r in runs]})
        for key, v in summary["by_run"].items():
            tr = v["transfer_delta"]
            print(f"{key}: mean change {v['mean_delta']:+.3f}" + (f", transfer (other languages) {tr:+.3f}"
                                                                  if tr is not None else ""))
    else:
        from ..outputs import plot

        plot.save_figure(plot.loss_curves(losses), out, "loss")
    print(f"wrote {len(runs)} adapter(s) to {out}", file=sys.stderr)
    return 0


def _transfer_rows(folder, method: str, condition: str, tasks: list[str], base, args) -> list[dict]:
    import gc

    from ..finetune.transfer import compare_with_base
    from ..models import load_model

    tuned = load_model(str(folder), dtype=args.dtype)
    rows = compare_with_base(tuned, tasks, base, method, condition, args.eval_limit, args.eval_batch_size)
    del tuned
    gc.collect()
    return rows
