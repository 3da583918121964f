"""The fine-tuning command: finetune (neuron-restricted training, its controls, and transfer)."""


from ..errors import LangNeuronsError, choices
from .args import check_model_before_loading, checkpoint_store, positive, result_folder
from .done import finish

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


def cmd_finetune(args) -> int:
    from ..finetune import FinetuneConfig, neuron_mask
    from ..finetune.methods import METHODS, MLP
    from ..sources import resolve_source

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
    positive("--checkpoint-every", args.checkpoint_every)
    resolve_source(args.model)
    from ..neurons import LanguageNeurons

    neurons = LanguageNeurons.load(args.neurons)
    check_model_before_loading(args.model, neurons.model, f"the neuron set {str(args.neurons)!r}")
    languages = [k.strip() for k in args.language.split(",")]
    neuron_mask(neurons, languages)  # an unknown language fails before the model is loaded
    with result_folder(args) as rf:
        return _finetune(args, rf, config, matrices, eval_tasks, neurons, languages, controls)


def _finetune(args, rf, config, matrices, eval_tasks, neurons, languages, controls) -> int:
    from ..finetune.transfer import run_name, training_examples, transfer
    from ..models import weights_hash
    from ..outputs.measurements import write_transfer
    from .measure import _load_for

    out = rf.path
    model = _load_for(args, neurons)  # refuses a neuron set found on other weights
    examples = training_examples(model.tokenizer, args.train, args.train_limit, args.max_length)
    runs = _runs(args.method, args.random_control, controls)
    store = checkpoint_store(args, rf, model=weights_hash(model))
    result = transfer(model, neurons, languages, examples, eval_tasks, runs=runs, config=config, matrices=matrices,
                      limit=args.eval_limit, batch_size=args.eval_batch_size, out=out, merged=args.merged,
                      train_info={"train": args.train, "neurons": str(args.neurons), "language": args.language},
                      metric=args.metric if eval_tasks else None, checkpoint=store,
                      checkpoint_every=args.checkpoint_every)
    losses = {run_name(m, c): a.losses for (m, c), a in result.adapters.items()}
    for (m, c), a in result.adapters.items():
        print(f"{run_name(m, c)}: loss {a.losses[0]:.3f} -> {a.losses[-1]:.3f} over {len(a.losses)} steps"
              + (f", {a.mask.count()} neurons" if a.mask is not None else ""))
    if eval_tasks:
        from ..tasks import task_language

        source = args.train[len("text:"):] if args.train.startswith("text:") else task_language(args.train)
        summary = write_transfer(result.table, losses, out, source=source, metric=args.metric,
                                 run={"model": args.model, "neurons": str(args.neurons), "language": args.language,
                                      "train": args.train, "config": config.as_dict(), "eval_tasks": eval_tasks,
                                      "eval_limit": args.eval_limit, "runs": list(losses)})
        for key, v in summary["by_run"].items():
            tr = v["transfer_delta"]
            print(f"{key}: mean change {v['mean_delta']:+.3f}" + (f", transfer (other languages) {tr:+.3f}"
                                                                  if tr is not None else ""))
    else:
        from ..outputs import plot

        plot.save_figure(plot.loss_curves(losses), out, "loss")
    out = rf.commit()
    return finish([], f"wrote {len(runs)} adapter(s) to {out}")
