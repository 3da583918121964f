"""The training loop: AdamW on the method's parameters only, seeded, with a loss per step."""

import base64
import math
import sys
from typing import Any

import torch

from ..errors import LangNeuronsError
from ..progress import stage
from ..resume import rng_state, set_rng_state
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


def _save_state(store, step: int, epoch: int, losses: list, epoch_state, params: dict, opt) -> None:
    """The training state after ``step`` optimizer steps, as one unit replacing the previous one."""
    tensors = {f"param.{name}": p.detach() for name, p in params.items()}
    for i, st in opt.state_dict()["state"].items():
        for k, t in st.items():
            if isinstance(t, torch.Tensor):
                tensors[f"opt.{i}.{k}"] = t
    store.save("state", {"step": step, "epoch": epoch, "losses": losses, "rng": rng_state(),
                         "epoch_generator": base64.b64encode(epoch_state.numpy().tobytes()).decode()}, tensors)


def finetune(model: Any, examples: list[Example], config: FinetuneConfig | None = None,
             mask: NeuronMask | None = None, *, train_info: dict | None = None, device: str | None = None,
             progress: bool = True, checkpoint=None, checkpoint_every: int = 10) -> Adapter:
    """Train ``config.method`` on ``examples`` and return the :class:`Adapter`.

    ``model`` is what :func:`~.load_model` accepts (a name, a folder) or a model it loaded; a fresh
    Hugging Face copy is loaded from its folder and trained in float32, so the given model is
    never changed. ``mask`` (a :class:`.NeuronMask`) is required by ``masked-lora`` and
    ``selected-rows``. Everything random — LoRA's initialisation, the order of examples — draws
    from ``config.seed``: the same seed gives the same adapter.

    With ``checkpoint`` (a :class:`~..resume.Checkpointed` store) the state after every
    ``checkpoint_every`` optimizer steps — the trained parameters, AdamW's moments, the example
    order's generator, the losses — is saved (replacing the previous one), and a resumed run
    continues from it: the adapter equals the uninterrupted run's bit for bit.
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
    losses: list[float] = []
    spe = math.ceil(len(examples) / config.batch_size)  # optimizer steps per epoch
    n_steps = config.epochs * spe
    step, first_epoch, epoch_state = 0, 0, None
    if checkpoint is not None and "state" in checkpoint:
        value, tensors = checkpoint.load("state")
        step, losses, first_epoch = value["step"], list(value["losses"]), value["epoch"]
        epoch_state = torch.frombuffer(bytearray(base64.b64decode(value["epoch_generator"])), dtype=torch.uint8)
        set_rng_state(value["rng"])
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[f"param.{name}"])
        sd = opt.state_dict()
        sd["state"] = {i: {k[len(f"opt.{i}."):]: t for k, t in tensors.items() if k.startswith(f"opt.{i}.")}
                       for i in range(len(params)) if f"opt.{i}.step" in tensors}
        opt.load_state_dict(sd)
        print(f"resuming finetune {config.method}: {step} of {n_steps} steps already done", file=sys.stderr)
    trainable.train()
    with stage(f"finetune {config.method}", n_steps, "step", progress) as bar:
        bar.advance(step)  # a resumed run's bar starts where it was interrupted
        for epoch in range(first_epoch, config.epochs):
            if epoch_state is not None:  # the resumed epoch draws its order from where it drew it
                gen.set_state(epoch_state)
                epoch_state = None
            start_state = gen.get_state()
            for k, (ids, am, labels) in enumerate(_batches(examples, config.batch_size, gen, pad)):
                if epoch * spe + k < step:
                    continue  # done before the interruption
                loss = _loss(trainable, ids.to(dev), am.to(dev), labels.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.advance(1)
                bar.note(loss=f"{losses[-1]:.3f}")
                if checkpoint is not None and (step % checkpoint_every == 0 or step == n_steps):
                    _save_state(checkpoint, step, epoch, losses, start_state, params, opt)
    trainable.eval()
    bake(trainable)
    return Adapter.from_trained(trainable, config, mask if config.uses_mask else None, base, losses,
                                dict(train_info or {}, n_examples=len(examples)))
