"""Benchmarks that print their figures (never timed unit tests: machines are shared and noisy).

Each benchmark measures the things it compares in one run, interleaved, and reports a ratio.
"""

import statistics
import time
from typing import Any

import numpy as np
import torch

from .corpus import load_corpus
from .record import record
from .tokens import encode, left_pad, max_length, pad_id, prepare_batches


def _bare_hf_model(model_dir: str, dtype: torch.dtype) -> Any:
    """The same weights as a plain Hugging Face model with its fastest attention (SDPA)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    return hf.eval()


def bench_record(model: str = "builtin", languages: list[str] | None = None, max_sentences: int = 200,
                 batch_size: int = 32, repeats: int = 3, site: str = "act") -> dict:
    """Time :func:`record` against the bare HF forward pass over the same batches.

    ``forward_s`` is the plain ``AutoModelForCausalLM`` forward (SDPA attention, logits computed,
    no hooks) over exactly the batches the recorder builds; ``record_s`` is the whole recording
    (tokenization excluded from neither: the bare forward is given pre-built batches, so the
    comparison favours it). Both are measured ``repeats`` times, interleaved; medians are reported.
    """
    from .loading import load_model
    from .sources import local_folder

    languages = languages or ["en", "de", "fr", "ru", "zh", "ar", "hi", "ja"]
    corpus = load_corpus("builtin", languages=languages, split="stats", max_sentences=max_sentences)
    bridge = load_model(model, site=site)
    _, where = local_folder(model)
    hf = _bare_hf_model(where, torch.float32)
    batches, n_sent, _, _ = prepare_batches(bridge.tokenizer, corpus.texts, batch_size, max_length(bridge))

    def run_forward() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                hf(input_ids=b.tokens, attention_mask=b.attention_mask)
        return time.perf_counter() - t

    def run_record() -> float:
        t = time.perf_counter()
        record(bridge, corpus, site=site, batch_size=batch_size, progress=False)
        return time.perf_counter() - t

    run_forward(), run_record()  # warm-up: allocator, thread pools, lazy imports
    fwd, rec = [], []
    for _ in range(repeats):
        fwd.append(run_forward())
        rec.append(run_record())
    forward_s, record_s = statistics.median(fwd), statistics.median(rec)
    n_tokens = int(sum(int(b.attention_mask.sum()) for b in batches))  # real tokens fed (BOS included)
    return {
        "benchmark": "record",
        "model": model,
        "site": site,
        "languages": languages,
        "sentences": sum(n_sent.values()),
        "tokens": n_tokens,
        "batch_size": batch_size,
        "repeats": repeats,
        "record_s": round(record_s, 4),
        "forward_s": round(forward_s, 4),
        "ratio": round(record_s / forward_s, 4),
        "record_tokens_per_s": round(n_tokens / record_s, 1),
        "forward_tokens_per_s": round(n_tokens / forward_s, 1),
        "record_all_s": [round(x, 4) for x in rec],
        "forward_all_s": [round(x, 4) for x in fwd],
        "threads": torch.get_num_threads(),
    }


def bench_steer(model: str = "builtin", languages: list[str] | None = None, target: str = "de",
                max_sentences: int = 100, top_rate: float = 0.05, n_prompts: int = 16, n_samples: int = 4,
                max_new_tokens: int = 32, repeats: int = 5, seed: int = 0) -> dict:
    """Time steered generation against the Hugging Face model's own cached ``generate``.

    The neurons are LAPE's (``top_rate``) on statistics recorded from ``max_sentences`` sentences per
    language of the built-in ``stats`` split; the intervention is :func:`~.evaluate.steer`'s
    default (``DEFAULT_MODE`` × ``DEFAULT_FACTOR`` of the target's ``DEFAULT_STATISTIC``) at every
    position. Three runs generate from the same left-padded prompts (``n_prompts`` neutral prompts
    × ``n_samples``, one batch) with the same seed and exactly ``max_new_tokens`` new tokens each (no
    stop at EOS: an intervention that changes when the text ends would otherwise change the amount
    of work, not its speed), sampling with :class:`~.evaluate.GenerationConfig`'s defaults:
    ``with`` — the package's generation under the intervention; ``without`` — the same with no
    intervention; ``hf`` — a fresh Hugging Face model of the same weights (its default attention)
    and its own KV-cached ``generate``. Measured ``repeats`` times interleaved after one warm-up;
    medians are reported. ``ratio`` is with / hf, ``intervention_ratio`` with / without.
    """
    from . import evaluate as ev
    from .evaluate.conditions import under
    from .evaluate.generation import generate_tokens, seeded
    from .evaluate.steering import steer_item
    from .identify import lape
    from .loading import load_model
    from .sources import local_folder

    languages = languages or ["en", "de", "fr", "ru", "zh", "ar", "hi", "ja"]
    bridge = load_model(model, site="act")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(local_folder(model)[1], dtype=torch.float32).eval()
    corpus = load_corpus("builtin", languages=languages, split="stats", max_sentences=max_sentences)
    stats = record(bridge, corpus, site="act", batch_size=32, progress=False)
    neurons = lape(stats, top_rate=top_rate)
    iv = steer_item(neurons, target, ev.DEFAULT_MODE, ev.DEFAULT_FACTOR, stats, ev.DEFAULT_STATISTIC)
    prompts = ev.default_prompts(target, n_prompts, seed=seed)
    rows = [encode(bridge.tokenizer, p) for p, _ in prompts for _ in range(n_samples)]
    tokens, mask = left_pad(rows, pad_id(bridge.tokenizer))
    config = ev.GenerationConfig(max_new_tokens=max_new_tokens, stop_at_eos=False)

    def run(items: list | None) -> float:
        t = time.perf_counter()
        with torch.no_grad(), seeded(bridge, seed):
            if items is None:  # the plain Hugging Face model, its own generate
                hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=max_new_tokens,
                            min_new_tokens=max_new_tokens, do_sample=True, temperature=config.temperature,
                            top_k=config.top_k, pad_token_id=pad_id(bridge.tokenizer), use_cache=True)
            else:
                with under(bridge, items):
                    generate_tokens(bridge, tokens, mask, config)
        return time.perf_counter() - t

    runs = {"with": [iv], "without": [], "hf": None}
    for items in runs.values():  # warm-up: allocator, thread pools, lazy imports
        run(items)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, items in runs.items():
            times[name].append(run(items))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "benchmark": "steer",
        "model": model,
        "target": target,
        "neurons": {"method": "lape", "top_rate": top_rate, "n_target": len(neurons.neurons[target]),
                    "statistics_languages": languages, "max_sentences": max_sentences},
        "intervention": {"mode": ev.DEFAULT_MODE, "factor": ev.DEFAULT_FACTOR, "statistic": ev.DEFAULT_STATISTIC,
                         "positions": "all"},
        "rows": len(rows),
        "prompt_tokens": int(tokens.shape[1]),
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "with_s": round(med["with"], 4),
        "without_s": round(med["without"], 4),
        "hf_s": round(med["hf"], 4),
        "ratio": round(med["with"] / med["hf"], 4),
        "intervention_ratio": round(med["with"] / med["without"], 4),
        "with_all_s": [round(x, 4) for x in times["with"]],
        "without_all_s": [round(x, 4) for x in times["without"]],
        "hf_all_s": [round(x, 4) for x in times["hf"]],
        "threads": torch.get_num_threads(),
    }


def bench_identify(lape_shape: tuple[int, int, int] = (21, 80, 28672), ap_shape: tuple[int, int] = (200_000, 3000),
                   sklearn_units: int = 200, seed: int = 0) -> dict:
    """Time :func:`lape` and :func:`average_precision` on synthetic data of the given sizes.

    ``lape_shape = (K, L, I)``; ``ap_shape = (units, samples)`` with one sample in six positive
    (Kojima's 500 of 3,000). scikit-learn, a test/benchmark dependency only, is timed on the first
    ``sklearn_units`` units: ``ap_speedup`` is sklearn's per-unit time extrapolated to all units over
    ``ap_s``; ``ap_speedup_subset`` compares the two on that subset alone (where our fixed costs
    weigh more). ``ap_max_abs_diff`` is the largest difference from sklearn on the subset.
    """
    from sklearn.metrics import average_precision_score

    from .identify import average_precision, lape
    from .stats import NeuronStats

    g = torch.Generator().manual_seed(seed)
    out: dict = {"lape_shape": list(lape_shape), "ap_shape": list(ap_shape)}

    K, L, I = lape_shape
    n_tokens = torch.randint(10_000, 200_000, (K,), generator=g).double()
    # cubed uniforms: most neurons rarely fire, a few often, like real statistics
    count_pos = torch.floor(torch.rand(K, L, I, generator=g, dtype=torch.float64).pow_(3) * n_tokens[:, None, None])
    # sum and sum_sq are not read by LAPE; aliasing count_pos saves 2·8·K·L·I bytes
    stats = NeuronStats([f"l{k}" for k in range(K)], "act", n_tokens, count_pos, count_pos, count_pos)
    t = time.perf_counter()
    res = lape(stats)
    out["lape_s"] = time.perf_counter() - t
    out["lape_n_kept"] = res.params["n_kept"]
    del stats, count_pos, res

    U, S = ap_shape
    scores = torch.randn(U, S, generator=g)
    labels = torch.zeros(S, dtype=torch.bool)
    labels[torch.randperm(S, generator=g)[: max(1, S // 6)]] = True
    # a signal in some units, so APs spread over (0, 1) rather than sit at chance
    scores[: U // 2] += torch.rand(U // 2, 1, generator=g) * labels.float()
    t = time.perf_counter()
    ap = average_precision(scores, labels)
    out["ap_s"] = time.perf_counter() - t

    m = min(sklearn_units, U)
    sub, y = scores[:m].numpy(), labels.numpy()
    t = time.perf_counter()
    ref = np.array([average_precision_score(y, sub[u]) for u in range(m)])
    out["ap_sklearn_subset_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ours = average_precision(scores[:m], labels).numpy()
    out["ap_ours_subset_s"] = time.perf_counter() - t
    out["ap_sklearn_extrapolated_s"] = out["ap_sklearn_subset_s"] / m * U
    out["ap_speedup"] = out["ap_sklearn_extrapolated_s"] / out["ap_s"]
    out["ap_speedup_subset"] = out["ap_sklearn_subset_s"] / out["ap_ours_subset_s"]
    out["ap_max_abs_diff"] = float(max(np.abs(ours - ref).max(), np.abs(ap[:m].numpy() - ref).max()))
    return out


def bench_hash(n_elements: int = 1 << 28, dtype: str = "bfloat16", n_tensors: int = 8) -> dict:
    """Time :func:`~.models.weights_hash` (every element, BLAKE2b) on a synthetic model of
    ``n_elements`` parameters in ``n_tensors`` tensors, uncached and then cached, and extrapolate
    the uncached time to an 8B-parameter model (Llama-3.1-8B: 8.03e9 parameters) in the same dtype."""
    from .identity import weights_hash

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    model = torch.nn.Module()
    per = n_elements // n_tensors
    for i in range(n_tensors):
        model.register_parameter(f"w{i}", torch.nn.Parameter(torch.empty(per, dtype=torch_dtype).normal_(),
                                                             requires_grad=False))
    t = time.perf_counter()
    weights_hash(model)
    first = time.perf_counter() - t
    t = time.perf_counter()
    weights_hash(model)
    cached = time.perf_counter() - t
    n_bytes = per * n_tensors * torch.finfo(torch_dtype).bits // 8
    return {
        "benchmark": "hash",
        "dtype": dtype,
        "parameters": per * n_tensors,
        "bytes": n_bytes,
        "hash_s": round(first, 4),
        "cached_s": round(cached, 6),
        "gb_per_s": round(n_bytes / first / 1e9, 3),
        "llama_8b_extrapolated_s": round(first / (per * n_tensors) * 8.03e9, 1),
    }
