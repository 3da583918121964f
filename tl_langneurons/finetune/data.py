"""Training examples: plain text of a language (causal LM on every token), or the documents of an
lm-eval task's training split (the loss on the answer given the prompt, which is what the task
scores)."""

from dataclasses import dataclass

from .. import _checks
from ..errors import LangNeuronsError, choices


@dataclass(frozen=True)
class Example:
    """Token ids, and the positions whose next-token loss counts (``labels`` = -100 elsewhere)."""

    input_ids: list
    labels: list


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def text_examples(tokenizer, texts: list[str], max_length: int) -> list[Example]:
    """One example per text: BOS + its tokens (cut to ``max_length``); every token but BOS is a target."""
    out = []
    for t in texts:
        ids = (_bos(tokenizer) + tokenizer(t, add_special_tokens=False)["input_ids"])[:max_length]
        if len(ids) < 2:
            continue
        labels = [-100] + ids[1:] if _bos(tokenizer) else ids
        out.append(Example(ids, labels))
    return out


def pair_example(tokenizer, context: str, continuation: str, max_length: int) -> Example | None:
    """BOS + context + continuation, split as the package scores a continuation
    (:func:`~.evaluate.scoring.split_continuation`, after moving the context's trailing spaces
    to the continuation, as lm-eval does); only the continuation is a target. The context is cut
    from the left to fit ``max_length``."""
    from ..evaluate.scoring import split_continuation

    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx, cont = split_continuation(tokenizer, context, continuation, sep="")
    keep = max_length - len(cont)
    if not cont or keep < 1:
        return None
    ctx = ctx[-keep:]
    return Example(ctx + cont, [-100] * len(ctx) + cont)


def task_examples(tokenizer, task: str, split: str = "train", limit: int | None = None, max_length: int = 128,
                  include_path=None) -> list[Example]:
    """The (prompt, gold answer) pairs of an lm-eval task's ``split`` (``train``, ``validation``
    or ``test``), scored on the answer: a multiple-choice task's correct choice, a generation
    task's target, each after the task's ``target_delimiter``."""
    from ..tasks.registry import load_specs, task_manager, task_specs

    limit = _checks.positive_int("limit", limit, allow_none=True)
    manager = task_manager([task], include_path)
    loaded = manager.load(load_specs(task_specs([task], manager), manager))["tasks"]
    if task not in loaded:
        raise LangNeuronsError(f"{task!r} is a group; train on one of its tasks: {choices(loaded)}")
    t = loaded[task]
    docs = {"train": t.training_docs, "validation": t.validation_docs, "test": t.test_docs}
    if split not in docs:
        raise LangNeuronsError(f"unknown split {split!r}; allowed: {choices(docs)}")
    rows = docs[split]()
    if rows is None:
        have = [k for k, f in (("train", t.has_training_docs), ("validation", t.has_validation_docs),
                                ("test", t.has_test_docs)) if f()]
        raise LangNeuronsError(f"task {task!r} has no {split!r} split; it has {choices(have)}")
    delim = t.config.target_delimiter
    out = []
    for doc in rows:
        if limit is not None and len(out) >= limit:
            break
        context = t.doc_to_text(doc)
        if not isinstance(context, str):
            raise LangNeuronsError(f"task {task!r} varies the context per choice (e.g. XWinograd); it cannot be "
                                   "trained on as prompt → answer")
        target = t.doc_to_target(doc)
        if t.OUTPUT_TYPE == "multiple_choice":
            options = t.doc_to_choice(doc)
            target = options[target] if isinstance(target, int) else target
        elif isinstance(target, list):
            target = target[0]
        ex = pair_example(tokenizer, context, delim + str(target), max_length)
        if ex is not None:
            out.append(ex)
    if not out:
        raise LangNeuronsError(f"task {task!r} gave no training examples from its {split!r} split")
    return out
