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
