"""Measure the built-in model on held-out text and write its model card (README.md in the model directory).

    python analyses/write_model_card.py tl_langneurons/assets/models/builtin

Held-out NLL is measured on the ``eval`` split of the built-in corpus (never seen in training,
never used to choose anything), one sentence per sequence with ``<s>`` prepended, exactly as the
recorder feeds text, in float32 from the shipped bf16 weights. Writes ``heldout.json`` beside the
card so that the numbers in the card are reproducible by this one command.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tl_langneurons.corpus import builtin_languages, load_corpus

# The same measurement the training script monitors with (this file sits beside it).
from train_builtin_model import heldout_nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--max-sentences", type=int, default=400, help="eval sentences per language")
    ap.add_argument("--reuse", action="store_true", help="rewrite the card from an existing heldout.json")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(args.model_dir)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    training = json.loads((d / "training.json").read_text())
    langs = builtin_languages("eval")
    corpus = load_corpus("builtin", languages=langs, split="eval", max_sentences=args.max_sentences)
    t = time.time()
    per_lang = {}
    if args.reuse:
        per_lang = json.loads((d / "heldout.json").read_text())["per_language"]
        langs = []
    for lang in langs:
        nll, n = heldout_nll(model, tok, {lang: corpus[lang]}, with_counts=True)[lang]
        per_lang[lang] = {"nll": round(nll, 4), "tokens": n, "sentences": len(corpus[lang])}
        print(lang, per_lang[lang], file=sys.stderr)
    mean = sum(v["nll"] for v in per_lang.values()) / len(per_lang)
    langs = list(per_lang)
    heldout = {"split": "eval", "max_sentences": args.max_sentences, "mean_nll": round(mean, 4),
               "per_language": per_lang, "seconds": round(time.time() - t, 1)}
    if not args.reuse:
        (d / "heldout.json").write_text(json.dumps(heldout, indent=1))

    a = training["args"]
    size_mb = (d / "model.safetensors").stat().st_size / 1e6
    rows = "\n".join(f"| {k} | {v['nll']:.3f} | {v['tokens']:,} | {training['train_tokens_per_language'][k]:,} |"
                     for k, v in per_lang.items())
    card = f"""# tl_langneurons built-in model organism

A small multilingual causal language model trained by `analyses/train_builtin_model.py` on the
`train` split of the package's built-in corpus (27 languages: {", ".join(langs)}), so that every
method of the package can be run and tested offline on a real trained model.

## Architecture

Llama (`LlamaForCausalLM`): {a['layers']} layers, d_model {a['d_model']}, {a['heads']} heads, gated
SiLU MLP with d_mlp {a['d_mlp']} ({a['layers'] * a['d_mlp']:,} MLP neurons), RMSNorm, RoPE, tied
input/output embeddings; {training['parameters']:,} parameters; byte-level BPE tokenizer with
{a['vocab']:,} tokens trained on the same text (equal characters per language). Context used in
training: {a['ctx']} tokens. Weights stored in bf16 ({size_mb:.1f} MB).

## Training

- Data: the built-in corpus's `train` split (LibreOffice UI and help text, UDHR; MPL-2.0, see
  `tl_langneurons/assets/corpus/NOTICE.md`), {sum(training['train_tokens_per_language'].values()):,} tokens.
  Each row is {a['ctx']}+1 tokens of one language starting at a sentence's `<s>`; languages drawn
  with probability ∝ tokens^{a['temperature']} (nearly balanced).
- {a['steps']:,} steps × {a['batch']} rows × {a['ctx']} tokens = {training['tokens_seen']:,} tokens; AdamW
  (0.9, 0.95), peak lr {a['lr']}, {a['warmup']} warm-up steps, weight decay 0.1, clipping 1.0, bf16
  autocast with fp32 master weights, seed {a['seed']}. Schedule: a {a['cosine_steps']:,}-step cosine
  (to 10% of the peak) followed up to step {a['anneal_at']}, then a cosine anneal to 10% over the
  last {a['steps'] - (a['anneal_at'] or 0):,} steps. This ran in two phases (stopped at step {a['start_step']},
  continued from those weights with fresh AdamW moments), because the single 2,000-step run
  would not have finished in the time available; the two commands are in the training script's docstring.
- Time: {training['train_minutes']:.1f} minutes of training on 2 CPU cores (phase 1
  {training.get('phase1_minutes', 0):.1f}, phase 2 {training['train_minutes'] - training.get('phase1_minutes', 0):.1f}; the machine was shared
  with other work, so throughput varied between 1,700 and 3,000 tokens/s), torch {training['torch']}.

## Held-out NLL per language

Mean NLL per token (nats) on the `eval` split (up to {args.max_sentences} sentences per language,
one sentence per sequence with `<s>` prepended; first token not scored). **Mean: {mean:.3f}.**
Reproduce: `python analyses/write_model_card.py {args.model_dir}`.

| language | held-out NLL | eval tokens | train tokens |
|---|---|---|---|
{rows}

## Limits

Trained on software-interface and help text: it knows that register and little else. It exists
to be a real multilingual model with real language-specific neurons that runs anywhere in
seconds, not to be a useful language model.
"""
    (d / "README.md").write_text(card)
    print(f"mean held-out NLL {mean:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
