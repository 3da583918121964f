"""Benchmarks that print their figures (never timed unit tests: machines are shared and noisy).

Each benchmark measures the things it compares in one run, interleaved, and reports a ratio.
"""

import statistics
import time
from typing import Any

import torch

from .corpus import load_corpus
from .record import prepare_batches, record


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
    from .models import _resolve_source, load_model

    languages = languages or ["en", "de", "fr", "ru", "zh", "ar", "hi", "ja"]
    corpus = load_corpus("builtin", languages=languages, split="stats", max_sentences=max_sentences)
    bridge = load_model(model, site=site)
    _, where = _resolve_source(model)
    hf = _bare_hf_model(where, torch.float32)
    batches, n_sent, _, _ = prepare_batches(bridge.tokenizer, corpus.texts, batch_size, int(bridge.cfg.n_ctx))

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
    n_tokens = int(sum(int(b.attention_mask.sum()) for b in batches))
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
        "record_all_s": [round(x, 4) for x in rec],
        "forward_all_s": [round(x, 4) for x in fwd],
        "threads": torch.get_num_threads(),
    }


def bench_steer(model: str = "builtin", languages: list[str] | None = None, target: str = "de",
                max_sentences: int = 100, top_rate: float = 0.05, n_prompts: int = 16, n_samples: int = 4,
                max_new_tokens: int = 32, repeats: int = 5, seed: int = 0) -> dict:
    """Time generation under the default steering intervention against the same generation without it.

    The neurons are LAPE's (``top_rate``) on statistics recorded from ``max_sentences`` sentences per
    language of the built-in ``stats`` split; the intervention is :func:`~.evaluate.steer`'s
    default (``DEFAULT_MODE`` × ``DEFAULT_FACTOR`` of the target's ``DEFAULT_STATISTIC``) at every
    position. Both runs generate from the same left-padded prompts (``n_prompts`` neutral prompts ×
    ``n_samples``, one batch) with the same seed and exactly ``max_new_tokens`` new tokens each (no
    stop at EOS: an intervention that changes when the text ends would otherwise change the
    amount of work, not its speed). Sampling as :func:`~.evaluate.steer` samples (its temperature
    and top-k), and like it without the KV cache (see ``evaluate._generate``). Measured ``repeats``
    times interleaved after one warm-up; medians are reported.
    """
    from . import evaluate as ev
    from .identify import lape
    from .models import load_model

    languages = languages or ["en", "de", "fr", "ru", "zh", "ar", "hi", "ja"]
    bridge = load_model(model, site="act")
    corpus = load_corpus("builtin", languages=languages, split="stats", max_sentences=max_sentences)
    stats = record(bridge, corpus, site="act", batch_size=32, progress=False)
    neurons = lape(stats, top_rate=top_rate)
    iv = ev._steer_item(neurons, target, ev.DEFAULT_MODE, ev.DEFAULT_FACTOR, stats, ev.DEFAULT_STATISTIC)
    prompts = ev.default_prompts(target, n_prompts, seed=seed)
    rows = [ev._encode(bridge, p) for p, _ in prompts for _ in range(n_samples)]
    tokens, mask = ev._left_pad(rows, ev._pad_id(bridge))
    gen = {"max_new_tokens": max_new_tokens, "stop_at_eos": False, "do_sample": True,
           "temperature": ev.DEFAULT_TEMPERATURE, "top_k": ev.DEFAULT_TOP_K, "return_type": "tokens",
           "verbose": False, "use_past_kv_cache": False}

    def run(items: list) -> float:
        t = time.perf_counter()
        with torch.no_grad(), ev._seeded(bridge, seed), ev._maybe_intervene(bridge, items):
            bridge.generate(tokens, attention_mask=mask, **gen)
        return time.perf_counter() - t

    run([]), run([iv])  # warm-up: allocator, thread pools, lazy imports
    without, with_ = [], []
    for _ in range(repeats):
        without.append(run([]))
        with_.append(run([iv]))
    without_s, with_s = statistics.median(without), statistics.median(with_)
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
        "with_s": round(with_s, 4),
        "without_s": round(without_s, 4),
        "ratio": round(with_s / without_s, 4),
        "with_all_s": [round(x, 4) for x in with_],
        "without_all_s": [round(x, 4) for x in without],
        "threads": torch.get_num_threads(),
    }
