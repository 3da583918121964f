"""The recorder across processes: killed with SIGKILL at random moments and resumed each time;
split over two torchrun workers. Top-activating examples are recorded too: they must come out
bit-identical in both cases."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tl_langneurons import NeuronStats, load_corpus

LANGS = ["en", "de", "ru", "zh"]


def _env():
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for lang, sents in load_corpus("builtin", languages=LANGS, split="eval", max_sentences=150).items():
        (d / f"{lang}.txt").write_text("\n".join(sents) + "\n", encoding="utf-8")
    return d


def _record_cmd(model_dir, corpus_dir, out, *extra):
    return [sys.executable, "-m", "tl_langneurons", "record", "--model", model_dir, "--corpus", str(corpus_dir),
            "--languages", ",".join(LANGS), "--batch-size", "1", "--sentence-means", "--top-examples", "3", "--out", str(out), *extra]


def _assert_identical(a: NeuronStats, b: NeuronStats):
    assert a.languages == b.languages
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name]), name
    _assert_same_examples(a, b)


def _assert_same_examples(a: NeuronStats, b: NeuronStats):
    for name, t in a.top_examples.tensors().items():
        assert torch.equal(t, b.top_examples.tensors()[name]), name
    assert a.top_examples.texts == b.top_examples.texts


def test_sigkill_at_five_random_moments_then_resume_is_identical(tiny_llama_dir, corpus_dir, tmp_path):
    """Checkpoint after every batch; kill the process with SIGKILL at a random moment once it has
    checkpointed, five times in a row, resuming each time; the sixth run finishes. Every tensor
    equals the uninterrupted recording's exactly."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, ref), check=True, env=_env(), capture_output=True)
    # the running result lives in the partial folder beside --out until it is complete (docs/outputs.md)
    ckpt = tmp_path / ".out.partial" / ".resume" / "record" / "rank0.checkpoint.safetensors"
    rng = random.Random(0)
    kills = 0
    for attempt in range(5):
        extra = ("--checkpoint-every", "1") + (("--resume",) if attempt else ())
        proc = subprocess.Popen(_record_cmd(tiny_llama_dir, corpus_dir, out, *extra), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # wait for this run's first checkpoint
            if ckpt.exists() and ckpt.stat().st_mtime_ns != before:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))  # then a random moment: mid-batch, mid-write or between
        if proc.poll() is not None:
            break  # finished before it could be killed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert not (out / "stats.json").exists()
    assert kills >= 3, "the recording finished too soon to be killed at several moments"
    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, out, "--checkpoint-every", "1", "--resume"),
                   check=True, env=_env(), capture_output=True)
    _assert_identical(NeuronStats.load(ref), NeuronStats.load(out))
    assert not ckpt.exists()  # a finished recording removes its checkpoint


def test_torchrun_two_processes_equal_one(tiny_llama_dir, corpus_dir, tmp_path):
    """The two processes form the batches one process forms and take every other one: each batch's
    float32 sums are bit-identical, so the totals agree to float64 rounding and counts exactly."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, one), check=True, env=_env(), capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tl_langneurons", *_record_cmd(tiny_llama_dir, corpus_dir, two)[3:]]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = NeuronStats.load(one), NeuronStats.load(two)
    assert b.meta["options"]["world_size"] == 2
    assert torch.equal(a.n_tokens, b.n_tokens)
    assert torch.equal(a.count_pos, b.count_pos)
    for name in ("sum", "sum_sq"):
        x, y = getattr(a, name), getattr(b, name)
        assert ((x - y).abs() <= 1e-12 * x.abs().clamp_min(1e-30)).all() | torch.equal(x, y), name
    # each sentence's mean is computed by exactly one process, from the same batch; the top examples
    # of the two processes merge exactly (a top-k under a strict order)
    _assert_same_examples(a, b)
    assert torch.equal(a.sentence_means, b.sentence_means)
    assert torch.equal(a.sentence_language, b.sentence_language)
