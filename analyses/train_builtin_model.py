"""Train the package's built-in model organism: a small multilingual Llama on the built-in corpus.

    python analyses/train_builtin_model.py --out tl_langneurons/assets/models/builtin

Everything is deterministic given ``--seed`` (same tokenizer, same batches, same initialisation;
CPU float32 training). What it does, and why:

* **Tokenizer**: byte-level BPE (``tokenizers``), trained on an equal number of characters from
  the ``train`` split of each of the 27 languages, so that no script is starved of merges.
* **Data**: each training row is 256+1 tokens from *one* language, starting at a sentence
  boundary: ``<s> sentence </s> <s> sentence </s> ...``. Monolingual rows mean that the model has
  to track "which language am I in", which is what language-specific neurons encode; starting at
  ``<s>`` matches how the recorder feeds sentences (BOS first). Languages are drawn with
  probability proportional to (train tokens)^0.3: nearly balanced (the largest language is drawn
  about twice as often as the smallest), without repeating the smallest languages' few thousand
  sentences dozens of times more than the others.
* **Model**: Llama architecture (gated SiLU MLP, RMSNorm, RoPE), with a wide MLP: more neurons per
  layer gave more selective language neurons in the feasibility study (``shared/ORGANISM.md``).
  Tied input/output embeddings keep the bf16 weights under 25 MB.
* **Schedule**: AdamW (0.9, 0.95), weight decay 0.1 on matrices, linear warm-up then cosine decay
  to 10% of the peak learning rate, gradient clipping at 1.0.

Two phases (how the shipped model was made; ``--anneal-at`` makes it one schedule): on a shared
2-core machine the planned 2,000-step cosine would not have finished in time, so it was stopped
at step 750 (``--stop-at 750`` writes ``<out>.ckpt``) and continued from those weights with a
short anneal: ``--init-from <out>.ckpt --start-step 750 --anneal-at 750 --steps 1250`` — the
learning rate follows the 2,000-step cosine up to step 750, then a cosine from there down to 10%
of the peak over the remaining steps. The data stream is fast-forwarded so that phase 2 sees the
batches an uninterrupted run would have seen; AdamW's moments restart (20 steps of re-warm-up).

    python analyses/train_builtin_model.py --out /tmp/builtin --stop-at 750
    python analyses/train_builtin_model.py --out tl_langneurons/assets/models/builtin \
        --init-from /tmp/builtin.ckpt --start-step 750 --anneal-at 750 --steps 1250

The final weights are saved in bf16 as a standard Hugging Face directory, with ``training.json``
(configuration, time, tokens, loss curve) that ``analyses/write_model_card.py`` turns into the model card.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tl_langneurons.corpus import builtin_languages, load_corpus

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def train_tokenizer(texts: dict[str, list[str]], vocab_size: int, chars_per_language: int) -> PreTrainedTokenizerFast:
    sample = []
    for lang, sents in texts.items():
        n = 0
        for s in sents:
            sample.append(s)
            n += len(s)
            if n >= chars_per_language:
                break
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample, trainer=trainer)
    # Like Llama's tokenizer: calling it on text prepends <s>.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def language_streams(tokenizer, texts: dict[str, list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per language: one token stream ``<s> s1 </s> <s> s2 </s> ...`` and the offsets of its ``<s>``."""
    out = {}
    for lang, sents in texts.items():
        ids = tokenizer(sents, add_special_tokens=False)["input_ids"]
        pieces, starts, pos = [], [], 0
        for x in ids:
            starts.append(pos)
            pieces.append([tokenizer.bos_token_id, *x, tokenizer.eos_token_id])
            pos += len(x) + 2
        out[lang] = (np.fromiter((t for p in pieces for t in p), dtype=np.int64), np.array(starts))
    return out


def make_batch(streams, langs, probs, rng: np.random.Generator, batch: int, ctx: int) -> torch.Tensor:
    rows = []
    for k in rng.choice(len(langs), size=batch, p=probs):
        stream, starts = streams[langs[k]]
        # Start at a sentence boundary whose window fits; the stream wraps around if needed.
        s = starts[rng.integers(len(starts))]
        idx = (s + np.arange(ctx + 1)) % len(stream)
        rows.append(stream[idx])
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def heldout_nll(model, tokenizer, texts: dict[str, list[str]], batch_size: int = 32, with_counts: bool = False) -> dict:
    """Mean NLL per token (nats) on sentences fed one per sequence with <s> prepended, as the recorder does.

    With ``with_counts``, each value is ``(nll, scored tokens)``."""
    model.eval()
    out = {}
    for lang, sents in texts.items():
        total, n = 0.0, 0
        for i in range(0, len(sents), batch_size):
            enc = tokenizer(sents[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=256)
            logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1)
            tgt = enc.input_ids[:, 1:]
            mask = enc.attention_mask[:, 1:].bool()
            nll = -logp.gather(-1, tgt[..., None])[..., 0]
            total += nll[mask].sum().item()
            n += mask.sum().item()
        out[lang] = (total / n, n) if with_counts else total / n
    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-mlp", type=int, default=1792)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2000, help="total steps")
    ap.add_argument("--cosine-steps", type=int, default=2000, help="length of the main cosine schedule")
    ap.add_argument("--anneal-at", type=int, default=None, help="from this step, anneal to 10%% over the rest")
    ap.add_argument("--stop-at", type=int, default=None, help="stop after this step (checkpoint only)")
    ap.add_argument("--init-from", default=None, help="continue from these weights (and their tokenizer)")
    ap.add_argument("--start-step", type=int, default=0, help="step the --init-from weights stopped at")
    ap.add_argument("--phase1-minutes", type=float, default=0.0, help="training minutes of phase 1 (for the card)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.3, help="language sampling p ∝ tokens^T")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-sentences", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    langs = builtin_languages("train")
    train = load_corpus("builtin", languages=langs, split="train").texts
    # Monitoring uses the stats split (never the eval split, which stays untouched for the model card).
    monitor = load_corpus("builtin", languages=langs, split="stats", max_sentences=args.eval_sentences).texts

    if args.init_from:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.init_from)
    else:
        tokenizer = train_tokenizer(train, args.vocab, chars_per_language=250_000)
    streams = language_streams(tokenizer, train)
    n_tok = np.array([len(streams[k][0]) for k in langs], dtype=np.float64)
    probs = n_tok ** args.temperature
    probs /= probs.sum()
    print({k: int(n) for k, n in zip(langs, n_tok)}, flush=True)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.d_model, intermediate_size=args.d_mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu",
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=0.02, attention_bias=False, mlp_bias=False,
    )
    model = LlamaForCausalLM(config)
    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        for _ in range(args.start_step):  # fast-forward the data stream to where phase 1 stopped
            make_batch(streams, langs, probs, rng, args.batch, args.ctx)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    def cosine(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = min(1.0, (step - args.warmup) / max(1, args.cosine_steps - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def lr_at(step: int) -> float:
        lr = cosine(step)
        if args.anneal_at is not None and step >= args.anneal_at:
            start = cosine(args.anneal_at)
            frac = (step - args.anneal_at) / max(1, args.steps - args.anneal_at)
            lr = 0.1 * args.lr + (start - 0.1 * args.lr) * 0.5 * (1 + math.cos(math.pi * frac))
        if args.init_from and step < args.start_step + 20:  # fresh AdamW moments: re-warm up
            lr *= (step - args.start_step + 1) / 20
        return lr

    log = []
    t_train = time.time()
    for step in range(args.start_step, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = make_batch(streams, langs, probs, rng, args.batch, args.ctx)
        # bf16 autocast (fp32 master weights): 4x faster matmuls on CPUs with AVX512-BF16/AMX.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            el = time.time() - t_train
            print(f"step {step} loss {loss.item():.3f} lr {lr_at(step):.2e} "
                  f"{(step + 1 - args.start_step) * args.batch * args.ctx / el:.0f} tok/s {el / 60:.1f} min", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            nll = heldout_nll(model, tokenizer, monitor)
            mean = float(np.mean(list(nll.values())))
            log.append({"step": step + 1, "train_loss": loss.item(), "monitor_nll": mean,
                        "minutes": (time.time() - t_train) / 60})
            print(f"== step {step + 1} monitor NLL {mean:.3f} " +
                  " ".join(f"{k}:{v:.2f}" for k, v in nll.items()), flush=True)
            ckpt = out.parent / (out.name + ".ckpt")
            model.save_pretrained(ckpt)
            tokenizer.save_pretrained(ckpt)
        if args.stop_at is not None and step + 1 == args.stop_at:
            print(f"stopped at step {step + 1}; checkpoint in {out.parent / (out.name + '.ckpt')}", flush=True)
            return

    train_minutes = (time.time() - t_train) / 60
    model = model.to(torch.bfloat16)
    model.config.torch_dtype = "bfloat16"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {
        "args": vars(args),
        "languages": langs,
        "train_tokens_per_language": {k: int(n) for k, n in zip(langs, n_tok)},
        "sampling_probability": {k: float(p) for k, p in zip(langs, probs)},
        "parameters": n_params,
        "tokens_seen": args.steps * args.batch * args.ctx,
        "phase_2_tokens": (args.steps - args.start_step) * args.batch * args.ctx,
        "train_minutes": train_minutes + args.phase1_minutes,
        "phase1_minutes": args.phase1_minutes,
        "total_minutes": (time.time() - t_start) / 60,
        "log": log,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=1))
    print(f"done in {train_minutes:.1f} min", flush=True)


if __name__ == "__main__":
    main()
