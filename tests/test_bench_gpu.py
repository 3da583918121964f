"""The first-GPU benchmark at its tiny shape on the CPU (so that it cannot rot), and recording in
bfloat16 against float32: the sums accumulate wide, and counts differ only by sign flips of
values within the bfloat16 model's rounding of 0."""

import json

import pytest
import torch

import archs
from conftest import SENTENCES
from tl_langneurons import LangNeuronsError, load_model, record
from tl_langneurons.backends import backend
from tl_langneurons.tokens import encode


@pytest.mark.skipif(backend() != "bridge", reason="boot_hf needs the TransformerBridge")
def test_gpu_script_at_tiny_shape(capsys):
    from tl_langneurons.bench_gpu import PLANS, bench_gpu, main
    from tl_langneurons.cli import main as cli

    assert cli(["bench", "gpu", "--shape", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = PLANS["tiny"]
    on_cpu = not torch.cuda.is_available()  # the default device: cuda where there is one
    assert (out["device"], out["dtype"], out["weights_dtype"]) == ("cpu" if on_cpu else "cuda", "torch.bfloat16",
                                                                   "torch.bfloat16")
    assert out["record"]["sentences"] == plan.record_sentences * len(plan.languages)
    for part, runs in (("record", ("record", "hf_forward")), ("steer", ("steered", "unsteered", "hf_generate")),
                       ("perplexity", ("perplexity_matrix", "hf_nll"))):
        for run in runs:
            assert out[part][run]["s"] > 0 and (out[part][run]["peak_extra_gib"] is None) == on_cpu  # peaks on CUDA
    assert out["steer"]["rows"] == plan.prompts * plan.n_samples
    # the package's baseline NLL equals the plain Hugging Face model's on the same tokens (bfloat16 rounding)
    assert out["perplexity"]["baseline_nll_max_abs_diff"] < 5e-3  # 1.2e-4 when written
    assert out["perplexity"]["forward_passes"] == (1 + 2 * plan.ppl_languages) * len(plan.languages)
    with pytest.raises(LangNeuronsError, match="unknown shape 'llama-70b'; allowed: 'llama-3.1-8b', 'tiny'"):
        bench_gpu("llama-70b")
    with pytest.raises(SystemExit):  # the command line refuses a dtype it does not know
        main(["--shape", "tiny", "--dtype", "int8"])


def test_bfloat16_recording_accumulates_wide_and_matches_float32(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    folder = archs.save("llama", tokenizer, tmp_path / "llama")
    corpus = {"en": SENTENCES["en"], "ja": SENTENCES["ja"]}
    # one sentence per batch: the oracle runs the same shapes, so its bfloat16 activations are the recorder's
    stats = {dt: record(load_model(folder, dtype=dt), corpus, site="act", batch_size=1, progress=False)
             for dt in ("float32", "bfloat16")}
    acts = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dt, attn_implementation="eager").eval()
        acts[name] = [torch.cat([torch.stack(archs.hf_act(hf, "llama", torch.tensor([encode(tokenizer, s)])))[:, 1:]
                                 for s in texts], 1).transpose(0, 1).double() for texts in corpus.values()]
    for k in range(len(corpus)):
        v16, v32 = acts["bfloat16"][k], acts["float32"][k]  # [tokens, layer, width]
        assert v16.abs().max() > 0.01 and (v16 > 0).any() and (v16 < 0).any()
        # accumulated wide: the sums equal a float64 sum of the very bfloat16 values, to float32's
        # precision (a bfloat16 running sum would be off by ~1e-2 of the total)
        torch.testing.assert_close(stats["bfloat16"].sum[k], v16.sum(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats["bfloat16"].sum_sq[k], (v16 * v16).sum(0), rtol=1e-5, atol=1e-6)
        assert torch.equal(stats["bfloat16"].count_pos[k], (v16 > 0).sum(0).double())
        # against float32: counts differ only where a float32 value lies within the bfloat16 model's
        # rounding error of 0 (the largest |bf16 - fp32| difference of that layer)
        rounding = (v16 - v32).abs().amax(dim=(0, 2), keepdim=True)[0]  # [layer, 1]
        assert float(rounding.max()) < 0.05 * float(v32.abs().max())
        exact = (v32 > 0).sum(0).double()
        near = (v32.abs() <= rounding).sum(0).double()
        diff = (stats["bfloat16"].count_pos[k] - stats["float32"].count_pos[k]).abs()
        assert bool((diff <= near).all()) and torch.equal(stats["float32"].count_pos[k], exact)
