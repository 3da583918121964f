"""Train the sparse autoencoders shipped with the package: one TopK SAE on the residual stream after
each block of the built-in model (``tl_langneurons/assets/saes/builtin-resid``), in SAELens's
folder format, so that SAE features can be studied offline (site ``sae:builtin``).

    python analyses/train_builtin_sae.py            # a few minutes on one idle CPU core

The same recipe trains SAEs for another model, at chosen blocks, into a folder of your own (not
shipped): ``--model gemma-3-270m --layers 6 --d-sae 2560 --out gemma_saes``.

What it does, all seeded (seed 0, one thread: the same bytes every run on one machine; on another
CPU the float rounding of its kernels differs and 500 Adam steps with a top-k selection carry that
into visibly different weights — retrained on a second machine, every block's FVU agreed with the
shipped SAEs' to within 0.0004):

1. Reads ``blocks.{l}.hook_resid_post`` of every block on the built-in corpus's ``train`` split
   (the first ``--sentences`` sentences of each of the 27 languages; BOS never counted), one
   forward pass per batch for all blocks, kept as float16 on the host.
2. Per block, trains a TopK SAE (Gao et al. 2024: the ``k`` largest pre-activations, ReLU'd; no
   sparsity penalty to tune): ``d_sae`` features, ``b_dec`` initialised to the activations' mean,
   ``W_enc = W_decᵀ`` at init, decoder rows renormalised to unit norm after every Adam step, a
   mean-squared reconstruction loss.
3. Measures on held-out text (the ``eval`` split, the first ``--eval-sentences`` sentences of each
   language): the fraction of variance unexplained, ``FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖²`` (explained
   variance = 1 − FVU), the mean number of active features per token (L0), the features never
   active, and how much the model's next-token loss rises when the block's output is replaced by
   the reconstruction (``ΔCE``).
4. Writes each SAE (``cfg.json`` + ``sae_weights.safetensors``, float16 to keep the package small),
   ``training.json`` and a ``README.md`` with those numbers.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from safetensors.torch import save_file  # noqa: E402

from tl_langneurons import load_model  # noqa: E402
from tl_langneurons._io import atomic_write_text  # noqa: E402
from tl_langneurons.corpus import load_corpus  # noqa: E402
from tl_langneurons.models import StopForward, forward_until  # noqa: E402
from tl_langneurons.tokens import max_length, prepare_batches, tokenizer_of  # noqa: E402
from tl_langneurons.units.sae import builtin_sae_path  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin", help="a model name load_model accepts")
    p.add_argument("--layers", default=None, help="comma-separated blocks (default: every block)")
    p.add_argument("--out", default=None, help="default: the package's builtin-resid folder (builtin model only)")
    p.add_argument("--sentences", type=int, default=40, help="training sentences per language (train split)")
    p.add_argument("--eval-sentences", type=int, default=8, help="held-out sentences per language (eval split)")
    p.add_argument("--d-sae", type=int, default=None, help="default: 2 × d_model")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=1024, help="tokens per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: the shipped SAEs' bytes are reproducible)")
    return p.parse_args(argv)


def resid_activations(model, texts, layers, batch_size=32):
    """Per block in ``layers``, the counted tokens' ``hook_resid_post`` ``[tokens, d_model]`` (float16)."""
    out = {l: [] for l in layers}
    state = {}

    def make(layer):
        def hook(act, hook):
            out[layer].append(act.reshape(-1, act.shape[-1])[state["rows"]].to(torch.float16))
            if layer == max(layers):  # nothing after the last block read is needed
                raise StopForward
        return hook

    batches = prepare_batches(tokenizer_of(model), texts, batch_size, max_length(model)).batches
    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{l}.hook_resid_post", make(l)) for l in layers]):
        for b in batches:
            state["rows"] = b.counted.reshape(-1).nonzero().squeeze(1)
            forward_until(model, b.tokens, b.attention_mask)
    return [torch.cat(out[l]) for l in layers]


class TopK(torch.nn.Module):
    def __init__(self, d_in, d_sae, k, mean):
        super().__init__()
        W = torch.randn(d_sae, d_in)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W.clone())
        self.W_enc = torch.nn.Parameter(W.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(mean.clone())
        self.k = k

    def encode(self, x):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def forward(self, x):
        return self.encode(x) @ self.W_dec + self.b_dec


def train_one(x, args):
    g = torch.Generator().manual_seed(args.seed)
    x = x.float()
    sae = TopK(x.shape[1], args.d_sae, args.k, x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    for step in range(args.steps):
        batch = x[torch.randint(0, len(x), (args.batch,), generator=g)]
        loss = (sae(batch) - batch).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        for group in opt.param_groups:  # linear decay over the last fifth
            group["lr"] = args.lr * min(1.0, 5 * (1 - (step + 1) / args.steps))
    return sae


@torch.no_grad()
def quality(sae, x):
    x = x.float()
    f = sae.encode(x)
    x_hat = f @ sae.W_dec + sae.b_dec
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    active = (f > 0)
    return {"fvu": fvu, "explained_variance": 1 - fvu, "l0": float(active.sum(-1).float().mean()),
            "dead_features": int((~active.any(0)).sum())}


@torch.no_grad()
def delta_ce(model, saes, layers, texts):
    """Mean next-token loss (nats, over the counted targets: never BOS, never padding) of the clean
    model, and its rise with each block's output replaced by its SAE's reconstruction (one at a time)."""
    batches = prepare_batches(tokenizer_of(model), texts, 16, max_length(model)).batches

    def mean_nll(hooks):
        total = count = 0.0
        with model.hooks(fwd_hooks=hooks):
            for b in batches:
                logits = model(b.tokens, attention_mask=b.attention_mask).float()
                nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), b.tokens[:, 1:],
                                                        reduction="none")
                mask = b.counted[:, 1:]
                total += float(nll[mask].double().sum())
                count += float(mask.sum())
        return total / count

    clean = mean_nll([])
    out = []
    for l, sae in zip(layers, saes):
        def splice(act, hook, sae=sae):
            return sae(act.float()).to(act.dtype)
        out.append(mean_nll([(f"blocks.{l}.hook_resid_post", splice)]) - clean)
    return clean, out


def write(sae, d: Path, hook: str, args):
    d.mkdir(parents=True, exist_ok=True)
    t = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in t.items()}, str(d / "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "d_in": int(sae.W_enc.shape[0]), "d_sae": args.d_sae, "k": args.k,
           "apply_b_dec_to_input": True, "normalize_activations": "none", "dtype": "float16",
           "metadata": {"hook_name": hook, "model_name": args.model, "trained_by": "analyses/train_builtin_sae.py"}}
    atomic_write_text(d / "cfg.json", json.dumps(cfg, indent=1) + "\n")


def readme(summary: dict) -> str:
    a = summary["args"]
    rows = "\n".join(f"| {r['layer']} | `{r['hook_name']}` | {r['fvu']:.3f} | {r['explained_variance']:.3f} | "
                     f"{r['l0']:.1f} | {r['dead_features']} | {r['delta_ce']:+.3f} |" for r in summary["layers"])
    if a["model"] == "builtin":
        head = """# SAEs on the built-in model

One TopK sparse autoencoder per block of the built-in model, reading `blocks.{l}.hook_resid_post`
(the residual stream after block l), in SAELens's folder format (`cfg.json` +
`sae_weights.safetensors`, float16). Use them as units with `site="sae:builtin"` (Python) or
`--site sae:builtin`; `docs/units.md` has what SAE-LAPE finds with them."""
    else:
        head = f"""# SAEs on {a['model']}

TopK sparse autoencoders reading `blocks.{{l}}.hook_resid_post` of {a['model']} at blocks {a['layers']}, in
SAELens's folder format (`cfg.json` + `sae_weights.safetensors`, float16): `--site sae:THIS_FOLDER`."""
    return f"""{head}

Trained by `python analyses/train_builtin_sae.py` (seed {a['seed']}, {a['threads']} CPU thread(s);
{summary['seconds']:.0f} s here, on a 2-core machine shared with other work: load average
{summary['load_average_at_start_and_end'][0]:.1f} at the start, {summary['load_average_at_start_and_end'][1]:.1f} at the end): {summary['train_tokens']:,} tokens of the built-in corpus's `train` split
({a['sentences']} sentences of each of its {summary['n_languages']} languages, BOS excluded); per block
{a['steps']} Adam steps of {a['batch']} tokens (lr {a['lr']}, decayed over the last fifth), d_sae = {a['d_sae']},
k = {a['k']}, `b_dec` initialised to the mean activation, decoder rows kept at unit norm,
mean-squared error loss.

Quality on held-out text ({summary['eval_tokens']:,} tokens of the `eval` split, {a['eval_sentences']} sentences
per language): FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² (explained variance = 1 − FVU), L0 = active features per token
(at most k), dead = features never active on that text, ΔCE = rise of the model's mean next-token loss
(nats; clean {summary['clean_nll']:.3f}) when that block's output is replaced by the reconstruction.

| layer | hook | FVU | explained variance | L0 | dead (of {a['d_sae']}) | ΔCE |
|---|---|---|---|---|---|---|
{rows}
"""


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start, load0 = time.time(), os.getloadavg()[0]
    if args.out is None and args.model != "builtin":
        sys.exit("--out is required for a model other than the built-in one (its SAEs are not shipped)")
    out = Path(args.out or builtin_sae_path())
    model = load_model(args.model)
    n = int(model.cfg.n_layers)
    layers = list(range(n)) if args.layers is None else [int(v) for v in args.layers.split(",")]
    if any(not 0 <= l < n for l in layers):
        sys.exit(f"--layers {args.layers}: the model has blocks 0..{n - 1}")
    args.layers = layers
    if args.d_sae is None:
        args.d_sae = 2 * int(model.cfg.d_model)
    train = load_corpus("builtin", split="train", max_sentences=args.sentences)
    held = load_corpus("builtin", split="eval", max_sentences=args.eval_sentences)
    xs = resid_activations(model, train.texts, layers)
    hs = resid_activations(model, held.texts, layers)
    print(f"{len(xs[0]):,} training tokens, {len(hs[0]):,} held-out tokens per block", file=sys.stderr)
    saes, rows = [], []
    for l, x, h in zip(layers, xs, hs):
        sae = train_one(x, args)
        saes.append(sae)
        q = quality(sae, h)
        rows.append({"layer": l, "hook_name": f"blocks.{l}.hook_resid_post", **q})
        print(f"block {l}: {q}  ({time.time() - start:.0f} s)", file=sys.stderr)
        write(sae, out / f"blocks.{l}.hook_resid_post", f"blocks.{l}.hook_resid_post", args)
    clean, dce = delta_ce(model, saes, layers, held.texts)
    for r, d in zip(rows, dce):
        r["delta_ce"] = d
    summary = {"args": vars(args) | {"out": None}, "train_tokens": len(xs[0]), "eval_tokens": len(hs[0]),
               "n_languages": len(train.texts), "clean_nll": clean, "layers": rows,
               "seconds": time.time() - start, "load_average_at_start_and_end": [load0, os.getloadavg()[0]],
               "torch": torch.__version__}
    atomic_write_text(out / "training.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "README.md", readme(summary))
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
