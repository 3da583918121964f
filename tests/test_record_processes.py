"""The recorder across processes: killed with SIGKILL and resumed; split over two torchrun workers."""

import json
import os
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
            "--languages", ",".join(LANGS), "--batch-size", "1", "--sentence-means", "--out", str(out), *extra]


def _assert_identical(a: NeuronStats, b: NeuronStats):
    assert a.languages == b.languages
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name]), name


def test_sigkill_then_resume_is_identical(tiny_llama_dir, corpus_dir, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, ref), check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(_record_cmd(tiny_llama_dir, corpus_dir, out, "--checkpoint-every", "5"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / ".checkpoint" / "rank0.checkpoint.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            try:
                if json.loads(ckpt.read_text())["batches_done"] >= 10:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.005)
    assert proc.poll() is None, "the recording finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "stats.json").exists()
    done = json.loads(ckpt.read_text())["batches_done"]
    assert 10 <= done < 4 * 150

    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, out, "--checkpoint-every", "5", "--resume"),
                   check=True, env=_env(), capture_output=True)
    _assert_identical(NeuronStats.load(ref), NeuronStats.load(out))
    assert not ckpt.exists()  # a finished recording removes its checkpoint


def test_torchrun_two_processes_equal_one(tiny_llama_dir, corpus_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_record_cmd(tiny_llama_dir, corpus_dir, one), check=True, env=_env(), capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tl_langneurons", *_record_cmd(tiny_llama_dir, corpus_dir, two)[3:]]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = NeuronStats.load(one), NeuronStats.load(two)
    assert b.meta["options"]["world_size"] == 2
    assert torch.equal(a.n_tokens, b.n_tokens)
    assert torch.allclose(a.count_pos, b.count_pos, atol=1.0)  # an activation at exactly 0 may flip
    assert (a.count_pos != b.count_pos).double().mean() < 1e-3
    assert torch.allclose(a.sum, b.sum, rtol=1e-5, atol=1e-5)
    assert torch.allclose(a.sum_sq, b.sum_sq, rtol=1e-5, atol=1e-5)
    # Each sentence's mean is computed by exactly one process, in the same global order.
    assert torch.allclose(a.sentence_means, b.sentence_means, atol=1e-5)
    assert torch.equal(a.sentence_language, b.sentence_language)
