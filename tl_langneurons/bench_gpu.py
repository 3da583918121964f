"""The first-GPU benchmark: the package against plain Hugging Face on a Llama-3.1-8B-shaped model.

``python -m tl_langneurons.bench_gpu`` (or ``tl-langneurons bench gpu``) builds a model with
Llama 3.1 8B's shape (32 layers, d_model 4,096, 14,336 MLP neurons, 32 query / 8 key-value heads,
a 128,256-token vocabulary, Llama 3 RoPE) and random weights, in bfloat16, directly on the device
(no download, no disk), and a copy of it as a plain Hugging Face model (SDPA attention). The
package gets the first through :func:`~.models.boot_hf` (a TransformerBridge on the model in
memory). It then measures, each against its plain baseline in the same run:

* **recording** — :func:`~.record` at ``act`` (float64 sums) vs the plain forward pass over the
  same token batches (tokens/s, peak memory);
* **steered generation** — KV-cached generation under the package's default steering intervention
  (``set`` × 16 of each neuron's mean) vs the same without it vs Hugging Face's own cached
  ``generate``, with the same prompts, seed and number of new tokens;
* **perplexity matrix** — :func:`~.evaluate.perplexity_matrix` (baseline + one ablation and one
  random control per language) vs the same number of plain forward passes computing the same
  token NLLs (time and peak memory).

Every run is timed after a warm-up, with ``torch.cuda.synchronize`` around it; peak memory is
``torch.cuda.max_memory_allocated`` during the run (reset before it) less what was allocated when it
started — the two models' weights, ``allocated_gib`` — (``None`` on the CPU). The
figures are printed as JSON. ``--shape tiny`` runs every step at a tiny shape in seconds on the CPU:
the test suite runs it so that the script cannot rot. Planned to finish within 8 minutes on one
H100 (80 GB: two 16 GB copies of the weights and the activations); it has not yet run on a GPU.

Neuron sets are random (a fixed count per layer and language, seeded): the cost of an
intervention depends on how many neurons it touches, not on which; LAPE on a random model would
give sets of arbitrary size.
"""

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import LangNeuronsError, choices

# Llama 3.1 8B's config.json, but for its weights
LLAMA_3_1_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
}
# the same family at a size the CPU runs in seconds (MLP ratio 3.5, as 14,336 / 4,096)
TINY = {**LLAMA_3_1_8B, "hidden_size": 64, "intermediate_size": 224, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8192}


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    languages: tuple  # recorded, and the steering target's neighbours
    record_sentences: int  # per language, from the built-in corpus's stats split
    record_batch: int
    prompts: int  # neutral prompts, each generated n_samples times in one batch
    n_samples: int
    new_tokens: int
    ppl_languages: int  # the first N of ``languages`` form the perplexity matrix
    ppl_sentences: int  # per language, from the eval split
    ppl_batch: int
    neurons_per_layer: int  # per language, random
    repeats: int  # timed runs after the warm-up (medians are reported)


SHAPES = {"llama-3.1-8b": LLAMA_3_1_8B, "tiny": TINY}
PLANS = {
    "llama-3.1-8b": Plan(("en", "de", "fr", "ru", "zh", "ar", "hi", "ja"), 200, 32, 16, 4, 64, 4, 64, 16, 28, 2),
    "tiny": Plan(("en", "de"), 4, 4, 2, 1, 3, 2, 2, 2, 3, 1),
}
TARGET = "de"
DTYPES = ("bfloat16", "float16", "float32")


def _say(t0: float, what: str) -> None:
    """Progress on stderr (the figures go to stdout): where the time goes on a first run."""
    print(f"[{time.perf_counter() - t0:7.1f} s] {what}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn: Callable[[], Any], device: torch.device) -> tuple[float, int | None]:
    """``(seconds, peak bytes allocated during the call beyond what was allocated before it — the
    weights of both models — or None off CUDA)``."""
    before = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - t
    return seconds, (torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None)


def _compare(runs: dict[str, Callable[[], Any]], device: torch.device, repeats: int) -> dict[str, dict]:
    """Each run once to warm up, then ``repeats`` times interleaved: median seconds, the largest
    peak of memory beyond the weights."""
    for fn in runs.values():
        fn()
    times: dict[str, list] = {k: [] for k in runs}
    peaks: dict[str, list] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            s, peak = _measure(fn, device)
            times[name].append(s)
            peaks[name].append(peak)
    return {k: {"s": round(statistics.median(times[k]), 4), "all_s": [round(x, 4) for x in times[k]],
                "peak_extra_gib": None if peaks[k][0] is None else round(max(peaks[k]) / 2**30, 3)} for k in runs}


def build(shape: str, device: str, dtype: torch.dtype, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(bridge, plain Hugging Face copy, tokenizer)``: random weights of ``shape``, made on ``device``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .loading import boot_hf
    from .sources import builtin_model_path

    tok = AutoTokenizer.from_pretrained(builtin_model_path())  # ids < 8,192: valid in every shape's vocabulary
    config = LlamaConfig(**SHAPES[shape], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    config._attn_implementation = "sdpa"  # the plain model's fastest attention
    torch.manual_seed(seed)
    with torch.device(device):
        hf = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
    plain = copy.deepcopy(hf)  # before the bridge wraps hf's modules in its own
    bridge = boot_hf(hf, tok, f"random-{shape}")
    return bridge, plain, tok


def _random_neurons(languages, n_layers: int, d_mlp: int, per_layer: int, model: dict, seed: int):
    from .neurons import LanguageNeurons

    g = torch.Generator().manual_seed(seed)
    sets = {k: [(layer, int(i)) for layer in range(n_layers) for i in torch.randperm(d_mlp, generator=g)[:per_layer]]
            for k in languages}
    return LanguageNeurons(sets, "random", {"per_layer": per_layer, "seed": seed}, "act", model, n_layers, d_mlp)


def bench_gpu(shape: str = "llama-3.1-8b", device: str | None = None, dtype: str = "bfloat16",
              seed: int = 0) -> dict:
    """Build ``shape`` on ``device`` (default: ``cuda`` where available) and measure the three
    comparisons of the module docstring; returns the figures (also what ``main`` prints)."""
    from . import evaluate as ev
    from .corpus import load_corpus
    from .evaluate.conditions import under
    from .evaluate.generation import generate_tokens, seeded
    from .evaluate.steering import steer_item
    from .identity import identity
    from .models import mlp_width
    from .record import record
    from .tokens import encode, left_pad, max_length, pad_id, prepare_batches

    if shape not in SHAPES:
        raise LangNeuronsError(f"unknown shape {shape!r}; allowed: {choices(SHAPES)}")
    if dtype not in DTYPES:
        raise LangNeuronsError(f"unknown dtype {dtype!r}; allowed: {choices(DTYPES)}")
    plan = PLANS[shape]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    _say(t0, f"building {shape} in {dtype} on {dev}")
    bridge, plain, tok = build(shape, str(dev), torch_dtype, seed)
    n_layers, d_mlp = int(bridge.cfg.n_layers), mlp_width(bridge)
    out: dict = {"benchmark": "gpu", "shape": shape, "device": str(dev), "dtype": str(torch_dtype),
                 "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "parameters": sum(p.numel() for p in plain.parameters()), "plan": asdict(plan)}
    out["build_s"] = round(time.perf_counter() - t0, 2)
    out["weights_dtype"] = str(next(plain.parameters()).dtype)
    # both models' weights: every peak below is memory beyond this
    out["allocated_gib"] = round(torch.cuda.memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None
    _say(t0, "built; hashing the weights")
    t = time.perf_counter()
    model_id = identity(bridge)  # the weights hash every artifact records, once per model
    out["hash_s"] = round(time.perf_counter() - t, 2)

    # -- recording vs the plain forward pass over the same batches
    corpus = load_corpus("builtin", languages=list(plan.languages), split="stats", max_sentences=plan.record_sentences)
    prepared = prepare_batches(tok, corpus.texts, plan.record_batch, max_length(bridge))
    n_tokens = int(sum(int(b.attention_mask.sum()) for b in prepared.batches))
    stats_box: list = []

    def run_record():
        stats_box[:] = [record(bridge, corpus, site="act", batch_size=plan.record_batch, progress=False)]

    def run_forward():
        with torch.no_grad():
            for b in prepared.batches:
                plain(input_ids=b.tokens.to(dev), attention_mask=b.attention_mask.to(dev))

    _say(t0, f"recording {n_tokens} tokens vs the plain forward pass")
    rec = _compare({"record": run_record, "hf_forward": run_forward}, dev, plan.repeats)
    for k in rec:
        rec[k]["tokens_per_s"] = round(n_tokens / rec[k]["s"], 1)
    out["record"] = {"tokens": n_tokens, "sentences": sum(prepared.n_sentences.values()), **rec,
                     "ratio": round(rec["record"]["s"] / rec["hf_forward"]["s"], 3)}
    stats = stats_box[0]

    # -- steered generation vs the same without intervention vs Hugging Face's own generate
    neurons = _random_neurons(plan.languages, n_layers, d_mlp, plan.neurons_per_layer, model_id, seed)
    steer = [steer_item(neurons, TARGET, ev.DEFAULT_MODE, ev.DEFAULT_FACTOR, stats, ev.DEFAULT_STATISTIC)]
    prompts = ev.default_prompts(TARGET, plan.prompts, seed=seed)
    rows = [encode(tok, p) for p, _ in prompts for _ in range(plan.n_samples)]
    tokens, mask = left_pad(rows, pad_id(tok))
    config = ev.GenerationConfig(max_new_tokens=plan.new_tokens, stop_at_eos=False)

    def generation(items):
        def run():
            with torch.no_grad(), seeded(bridge, seed):
                if items is None:
                    plain.generate(input_ids=tokens.to(dev), attention_mask=mask.to(dev),
                                   max_new_tokens=plan.new_tokens, min_new_tokens=plan.new_tokens, do_sample=True,
                                   temperature=config.temperature, top_k=config.top_k or 0,
                                   pad_token_id=pad_id(tok), use_cache=True)
                else:
                    with under(bridge, items):
                        generate_tokens(bridge, tokens, mask, config)
        return run

    _say(t0, f"generating {len(rows)} rows x {plan.new_tokens} tokens: steered, unsteered, Hugging Face")
    gen = _compare({"steered": generation(steer), "unsteered": generation([]), "hf_generate": generation(None)},
                   dev, plan.repeats)
    new = len(rows) * plan.new_tokens
    for k in gen:
        gen[k]["new_tokens_per_s"] = round(new / gen[k]["s"], 1)
    out["steer"] = {"rows": len(rows), "prompt_tokens": int(tokens.shape[1]), "new_tokens": plan.new_tokens,
                    "neurons": plan.neurons_per_layer * n_layers,
                    "intervention": {"mode": ev.DEFAULT_MODE, "factor": ev.DEFAULT_FACTOR,
                                     "statistic": ev.DEFAULT_STATISTIC}, **gen,
                    "ratio": round(gen["steered"]["s"] / gen["hf_generate"]["s"], 3),
                    "intervention_ratio": round(gen["steered"]["s"] / gen["unsteered"]["s"], 3)}

    # -- the perplexity matrix vs as many plain forward passes computing the same NLLs
    ppl_langs = list(plan.languages[:plan.ppl_languages])
    held_out = load_corpus("builtin", languages=ppl_langs, split="eval", max_sentences=plan.ppl_sentences)
    batches = prepare_batches(tok, held_out.texts, plan.ppl_batch, max_length(bridge)).batches
    passes = 1 + 2 * len(ppl_langs)  # baseline, then each language's ablation and its random control
    frame_box: list = []

    def run_matrix():
        frame_box[:] = [ev.perplexity_matrix(bridge, held_out, neurons, languages=ppl_langs, control="random",
                                             seed=seed, batch_size=plan.ppl_batch, progress=False)]

    plain_sums = torch.zeros(2, len(ppl_langs), dtype=torch.float64)  # NLL and targets per language

    def run_plain_nll():
        with torch.no_grad():
            for _ in range(passes):
                plain_sums.zero_()
                for b in batches:
                    ids, counted = b.tokens.to(dev), b.counted[:, 1:].to(dev)
                    logits = plain(input_ids=ids, attention_mask=b.attention_mask.to(dev)).logits[:, :-1]
                    nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
                    plain_sums[0, b.language] += float(torch.where(counted, nll.double(), 0.0).sum())
                    plain_sums[1, b.language] += float(counted.sum())

    _say(t0, f"perplexity matrix over {len(ppl_langs)} languages vs {passes} plain NLL passes")
    ppl = _compare({"perplexity_matrix": run_matrix, "hf_nll": run_plain_nll}, dev, plan.repeats)
    frame = frame_box[0]
    base = frame[(frame.condition == "baseline") & (frame.ablated == ppl_langs[0])].set_index("evaluated")
    plain_nll = (plain_sums[0] / plain_sums[1]).tolist()
    out["perplexity"] = {"languages": ppl_langs, "forward_passes": passes * len(batches),
                         "tokens_per_pass": int(plain_sums[1].sum()), **ppl,
                         "ratio": round(ppl["perplexity_matrix"]["s"] / ppl["hf_nll"]["s"], 3),
                         "baseline_nll": {k: round(float(base.nll[k]), 5) for k in ppl_langs},
                         # the package's baseline against the plain model's NLL of the same tokens: the
                         # bridge (eager attention) and the plain model (SDPA) differ by rounding only
                         "baseline_nll_max_abs_diff": max(abs(float(base.nll[k]) - plain_nll[i])
                                                          for i, k in enumerate(ppl_langs))}
    out["total_s"] = round(time.perf_counter() - t0, 1)
    _say(t0, "done")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_langneurons.bench_gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llama-3.1-8b", choices=list(SHAPES))
    parser.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    args = parser.parse_args(argv)
    print(json.dumps(bench_gpu(args.shape, args.device, args.dtype), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
