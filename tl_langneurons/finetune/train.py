"""The training loop: AdamW on the method's parameters only, seeded, with a loss per step."""

import math
from typing import Any

import torch

from ..errors import LangNeuronsError
from ..progress import stage
from .adapter import Adapter, base_model
from .data import Example
from .masks import NeuronMask
from .methods import FinetuneConfig, attach, bake


def _batches(examples: list[Example], batch_size: int, generator: torch.Generator, pad_id: int):
    order = torch.randperm(len(examples), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        rows = [examples[i] for i in order[start:start + batch_size]]
        T = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), T), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: padded positions are neither attended to nor targets
            ids[i, :len(r.input_ids)] = torch.tensor(r.input_ids)
            labels[i, :len(r.labels)] = torch.tensor(r.labels)
            mask[i, :len(r.input_ids)] = 1
        yield ids, mask, labels


def _loss(model, ids, mask, labels) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens (labels shifted by one)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=-100)


def finetune(model: Any, examples: list[Example], config: FinetuneConfig | None = None,
             mask: NeuronMask | None = None, *, train_info: dict | None = None, device: str | None = None,
             progress: bool = True) -> Adapter:
    """Train ``config.method`` on ``examples`` and return the :class:`Adapter`.

    ``model`` is what :func:`~.load_model` accepts (a name, a folder) or a model it loaded; a fresh
    Hugging Face copy is loaded from its folder and trained in float32, so the given model is
    never changed. ``mask`` (a :class:`.NeuronMask`) is required by ``masked-lora`` and
    ``selected-rows``. Everything random — LoRA's initialisation, the order of examples — draws
    from ``config.seed``: the same seed gives the same adapter.
    """
    config = config or FinetuneConfig()
    if not isinstance(config, FinetuneConfig):
        raise LangNeuronsError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    if not examples:
        raise LangNeuronsError("no training examples")
    hf, tokenizer, base = base_model(model, device)
    torch.manual_seed(config.seed)  # LoRA's A matrices are initialised from torch's global generator
    trainable, params = attach(hf, config, mask if config.uses_mask else None)
    opt = torch.optim.AdamW(list(params.values()), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dev = next(hf.parameters()).device
    losses = []
    trainable.train()
    n_steps = config.epochs * math.ceil(len(examples) / config.batch_size)
    with stage(f"finetune {config.method}", n_steps, "step", progress) as bar:
        for _ in range(config.epochs):
            for ids, am, labels in _batches(examples, config.batch_size, gen, pad):
                loss = _loss(trainable, ids.to(dev), am.to(dev), labels.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.advance(1)
                bar.note(loss=f"{losses[-1]:.3f}")
    trainable.eval()
    bake(trainable)
    return Adapter.from_trained(trainable, config, mask if config.uses_mask else None, base, losses,
                                dict(train_info or {}, n_examples=len(examples)))
