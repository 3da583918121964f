"""Neuron-restricted fine-tuning on the built-in model: the update is exactly zero outside the mask
(LoRA and full-rank), the random control changes as many rows per layer, the loss falls, the same
seed gives the same adapter, adapters round-trip, merged = unmerged, the merged folder loads like
any model and is another model; the `finetune` command and the Mondal script."""

import json

import pandas as pd
import pytest
import torch
from conftest import analysis_script

from tl_langneurons import LangNeuronsError, load_corpus, load_model
from tl_langneurons.cli import main
from tl_langneurons.finetune import (
    Adapter,
    FinetuneConfig,
    apply_adapter,
    finetune,
    load_finetuned,
    merged_folder,
    neuron_mask,
    random_mask,
    text_examples,
)
from tl_langneurons.finetune.adapter import base_model
from tl_langneurons.finetune.methods import MLP
from tl_langneurons.models import weights_hash
from tl_langneurons.neurons import LanguageNeurons

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(builtin_model):
    L, D = int(builtin_model.cfg.n_layers), int(builtin_model.cfg.d_mlp)
    # de: neurons in layers 0, 2 and 5 only (the other layers must not change at all)
    sets = {"de": [(0, i) for i in (3, 17, 400, 1001)] + [(2, i) for i in (5, 6)] + [(5, i) for i in range(50, 60)],
            "ru": [(1, i) for i in (9, 99)]}
    neurons = LanguageNeurons(sets, "manual", {}, "act", {}, L, D)
    texts = load_corpus("builtin", languages=["de"], split="train", max_sentences=16)["de"]
    return neurons, text_examples(builtin_model.tokenizer, texts, 40)


def _weights(hf) -> dict:
    return {k: v.detach().clone() for k, v in hf.named_parameters()}


def _changed(base: dict, tuned: dict, layer: int, proj: str) -> set[int]:
    key = next(k for k in base if k.endswith(f"layers.{layer}.mlp.{proj}.weight"))
    diff = tuned[key] != base[key]
    return set((diff.any(0) if proj == "down_proj" else diff.any(1)).nonzero().flatten().tolist())


def _merged_weights(adapter) -> dict:
    hf, _, _ = base_model("builtin")
    return _weights(apply_adapter(hf, adapter, merged=True))


@pytest.fixture(scope="module")
def base_weights():
    return _weights(base_model("builtin")[0])


@pytest.mark.parametrize("method,matrices", [("masked-lora", ("gate_proj",)), ("masked-lora", MLP),
                                             ("selected-rows", MLP)])
def test_update_is_zero_outside_the_mask(setup, base_weights, method, matrices):
    neurons, ex = setup
    mask = neuron_mask(neurons, "de")
    adapter = finetune("builtin", ex, FinetuneConfig(method=method, matrices=matrices, lr=1e-2), mask, progress=False)
    tuned = _merged_weights(adapter)
    for layer in range(6):
        for proj in MLP:
            want = set(mask.layers.get(layer, ())) if proj in matrices else set()
            # exactly the selected rows (gate/up) or columns (down) changed, every other entry bit-identical
            assert _changed(base_weights, tuned, layer, proj) == want, (method, layer, proj)
    attn = [k for k in base_weights if "self_attn" in k]
    assert any(not torch.equal(base_weights[k], tuned[k]) for k in attn) == (method == "masked-lora")
    # the random control: the same number of rows per layer, other rows
    ctrl = random_mask(mask, 0)
    assert ctrl.per_layer() == mask.per_layer() and ctrl.layers != mask.layers
    tuned_c = _merged_weights(finetune("builtin", ex, FinetuneConfig(method=method, matrices=matrices, lr=1e-2),
                                       ctrl, progress=False))
    for layer in range(6):
        assert _changed(base_weights, tuned_c, layer, matrices[0]) == set(ctrl.layers.get(layer, ()))


def test_unmasked_methods(setup, base_weights):
    neurons, ex = setup
    full = _merged_weights(finetune("builtin", ex, FinetuneConfig(method="full-lora", lr=1e-2), None, progress=False))
    assert len(_changed(base_weights, full, 3, "gate_proj")) > 1000  # every layer, nearly every row
    attn = _merged_weights(finetune("builtin", ex, FinetuneConfig(method="attention-only", lr=1e-2), None,
                                    progress=False))
    assert all(torch.equal(base_weights[k], attn[k]) for k in base_weights if ".mlp." in k)
    assert not torch.equal(base_weights[next(k for k in base_weights if "q_proj" in k)],
                           attn[next(k for k in base_weights if "q_proj" in k)])


def test_loss_falls_and_seed_repeats(setup):
    neurons, ex = setup
    mask = neuron_mask(neurons, "de")
    cfg = FinetuneConfig(method="masked-lora", lr=3e-3, epochs=4, batch_size=4)
    a = finetune("builtin", ex, cfg, mask, progress=False)
    per_epoch = len(a.losses) // 4
    assert sum(a.losses[-per_epoch:]) < sum(a.losses[:per_epoch])  # the last epoch's loss below the first's
    b = finetune("builtin", ex, cfg, mask, progress=False)
    assert a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.losses == b.losses
    c = finetune("builtin", ex, FinetuneConfig(method="masked-lora", lr=3e-3, epochs=4, batch_size=4, seed=1), mask,
                 progress=False)
    assert any(not torch.equal(a.tensors[k], c.tensors[k]) for k in a.tensors)


def test_adapter_files_merged_unmerged_and_fingerprint(setup, tmp_path, builtin_model):
    from peft import PeftModel

    neurons, ex = setup
    a = finetune("builtin", ex, FinetuneConfig(method="masked-lora", lr=1e-2), neurons_mask := neuron_mask(neurons, "de"),
                 progress=False)
    a.save(tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "adapter.json").read_text())
    assert meta["method"] == "masked-lora" and meta["mask"]["layers"]["0"] == [3, 17, 400, 1001]
    b = Adapter.load(tmp_path / "ad")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors) and b.mask == neurons_mask
    tokens = torch.tensor([[1, 200, 300, 400, 500, 600]])
    with torch.no_grad():
        hf, _, _ = base_model("builtin")
        merged_logits = apply_adapter(hf, b, merged=True)(tokens).logits
        hf, _, _ = base_model("builtin")
        unmerged_logits = apply_adapter(hf, b, merged=False)(tokens).logits
        hf, _, _ = base_model("builtin")
        peft_logits = PeftModel.from_pretrained(hf, str(tmp_path / "ad" / "peft")).eval()(tokens).logits
        base_logits = builtin_model(tokens)
    assert torch.allclose(merged_logits, unmerged_logits, atol=1e-5)
    assert torch.allclose(peft_logits, unmerged_logits, atol=1e-6)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)
    # the merged folder loads with load_model and transformers; the bridge on it is another model
    folder = merged_folder(b, tmp_path / "ad" / "merged")
    tuned = load_model(str(folder))
    from transformers import AutoModelForCausalLM

    hf_tuned = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.allclose(tuned(tokens), merged_logits, atol=1e-4)
        assert torch.allclose(hf_tuned(tokens).logits, merged_logits, atol=1e-5)
    assert weights_hash(tuned) != weights_hash(builtin_model)
    # the TransformerLens model with the adapter unmerged computes what the merged one does
    unmerged = load_finetuned(tmp_path / "ad", merged=False)
    with torch.no_grad():
        assert torch.allclose(unmerged(tokens), tuned(tokens), atol=1e-4)
    assert torch.allclose(load_finetuned(tmp_path / "ad")(tokens), tuned(tokens))
    # interventions and recording work on the fine-tuned model
    from tl_langneurons import intervene, record

    with torch.no_grad(), intervene(tuned, {0: [3, 17]}, mode="zero"):
        assert not torch.allclose(tuned(tokens), merged_logits, atol=1e-4)
    stats = record(tuned, load_corpus("builtin", languages=["de", "en"], split="stats", max_sentences=4),
                   progress=False)
    assert stats.model["weights_hash"] == weights_hash(tuned) != weights_hash(builtin_model)


def test_errors(setup):
    neurons, ex = setup
    with pytest.raises(LangNeuronsError, match="unknown fine-tuning method 'lora'"):
        FinetuneConfig(method="lora")
    with pytest.raises(LangNeuronsError, match="matrices"):
        FinetuneConfig(matrices=("fc1",))
    with pytest.raises(LangNeuronsError, match="unknown language 'fr'"):
        neuron_mask(neurons, "fr")
    with pytest.raises(LangNeuronsError, match="needs a neuron mask"):
        finetune("builtin", ex, FinetuneConfig(method="masked-lora"), None, progress=False)


def test_finetune_command(tmp_path, setup, capsys):
    neurons, _ = setup
    npath = neurons.save(tmp_path / "n.json")
    out = tmp_path / "ft"
    assert main(["finetune", "--neurons", str(npath), "--language", "de", "--train", "tlln_cloze_en",
                 "--train-limit", "16", "--eval-tasks", "tlln_cloze_en,tlln_cloze_de", "--eval-limit", "6",
                 "--lr", "1e-3", "--out", str(out)]) == 0
    for run in ("masked-lora", "masked-lora-random", "attention-only", "full-lora"):
        assert (out / run / "adapter.safetensors").is_file() and (out / run / "merged" / "config.json").is_file()
    table = pd.read_csv(out / "transfer.csv")
    assert set(zip(table.method, table.condition)) == {("masked-lora", "neurons"), ("masked-lora", "random"),
                                                       ("attention-only", "none"), ("full-lora", "none")}
    assert set(table.task) == {"tlln_cloze_en", "tlln_cloze_de"} and (table.n == 6).all()
    assert ((table.value - table.base_value - table.delta).abs() < 1e-12).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "en" and set(summary["by_run"]) == {
        "masked-lora/neurons", "masked-lora/random", "attention-only/none", "full-lora/none"}
    assert (out / "loss.png").is_file() and (out / "transfer.pdf").is_file()
    assert "masked-lora: loss" in capsys.readouterr().out
    # the method alone, on random neurons, no controls, merged
    assert main(["finetune", "--neurons", str(npath), "--language", "de", "--train", "text:de", "--train-limit", "8",
                 "--method", "selected-rows", "--random-control", "--controls", "none", "--merged",
                 "--out", str(tmp_path / "one")]) == 0
    meta = json.loads((tmp_path / "one" / "selected-rows-random" / "adapter.json").read_text())
    assert meta["mask"]["kind"] == "random" and meta["config"]["matrices"] == list(MLP)
    assert (tmp_path / "one" / "selected-rows-random" / "merged" / "config.json").is_file()
    for argv, msg in ((["--method", "lora"], "unknown --method"), (["--controls", "foo"], "unknown --controls"),
                      (["--language", "fr"], "unknown language 'fr'")):
        base = ["finetune", "--neurons", str(npath), "--language", "de", "--train", "text:de", "--out",
                str(tmp_path / "e")]
        assert main(base + argv) == 2
        assert msg in capsys.readouterr().err


def test_mondal_script(tmp_path, capsys):
    module = analysis_script("mondal2025_transfer")
    out = tmp_path / "m"
    assert module.main(["--model", "builtin", "--languages", "en,de", "--target", "de", "--max-sentences", "16",
                        "--top-rate", "0.05", "--train-limit", "16", "--limit", "5", "--methods",
                        "masked-lora,attention-only", "--out", str(out)]) == 0
    table = pd.read_csv(out / "transfer.csv")
    assert set(table.method) == {"masked-lora", "attention-only"} and set(table.condition) == {"neurons", "random",
                                                                                              "none"}
    assert "masked-lora/neurons" in capsys.readouterr().out
