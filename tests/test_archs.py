"""Every architecture of the seed papers' models, as a tiny random model built offline
(:mod:`archs`) and loaded through :func:`load_model`, against Hugging Face's own modules:

* recording: activation counts equal a count on the Hugging Face activations (forward hooks on
  the model's own φ module, or on the down projection's input);
* zeroing at ``act`` equals zeroing the down projection's columns (the weights edited): logits equal;
* greedy generation under that intervention equals Hugging Face's own ``generate`` on the edited model;

and mixture-of-experts models are refused with a message that names what is missing.
"""

import copy

import pytest
import torch

import archs
from conftest import SENTENCES
from tl_langneurons import Intervention, LangNeuronsError, intervene, load_model, record
from tl_langneurons.evaluate import GenerationConfig
from tl_langneurons.evaluate.generation import generate_ids
from tl_langneurons.backends import backend
from tl_langneurons.models import check_site, mlp_width
from tl_langneurons.tokens import encode

# the TL 3.x back end (tl_langneurons.hooked) builds Llama and Gemma 3 only
pytestmark = pytest.mark.skipif(backend() != "bridge", reason="loaded through the TransformerBridge")

CORPUS = {lang: SENTENCES[lang][:3] for lang in ("en", "de", "ja")}
ZEROED = {0: [0, 5, 17, 40], 1: [3, 29, 47]}  # within every model's width (48; BLOOM 128)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer):
    """``name → (folder, bridge)``, each built and loaded once for the module."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            folder = archs.save(name, tokenizer, tmp_path_factory.mktemp(name))
            cache[name] = (folder, load_model(folder))
        return cache[name]
    return get


def _hf(folder: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", archs.DENSE)
def test_recording_equals_hugging_face_activations(built, tokenizer, name):
    folder, model = built(name)
    width = 4 * archs.D_MODEL if name == "bloom" else archs.WIDTH
    assert mlp_width(model) == width  # read from the weights (TL's config says 128 for OPT and XGLM)
    assert check_site(model, "pre").d_mlp == width  # every site's hooks fire at that width
    hf = _hf(folder)
    for site in ("act", "post"):
        stats = record(model, CORPUS, site=site, batch_size=2, progress=False)
        assert (stats.n_layers, stats.d_mlp) == (archs.LAYERS, width)
        for k, lang in enumerate(CORPUS):
            # one sentence at a time, without padding; BOS (position 0) never counts
            acts = [torch.stack(archs.hf_act(hf, name, torch.tensor([encode(tokenizer, s)]), site))[:, 1:]
                    for s in CORPUS[lang]]
            values = torch.cat(acts, 1).transpose(0, 1).double()  # [tokens, layer, width]
            assert stats.n_tokens[k] == values.shape[0]
            archs.assert_counts_within_rounding(stats.count_pos[k], values, 1e-5)
            torch.testing.assert_close(stats.sum[k], values.sum(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", archs.DENSE)
def test_zero_at_act_equals_zeroed_down_projection_and_generates_as_hugging_face(built, tokenizer, name):
    folder, model = built(name)
    hf = _hf(folder)
    edited = copy.deepcopy(hf)
    archs.zero_neuron_columns(edited, ZEROED)
    ids = torch.tensor([encode(tokenizer, SENTENCES["de"][1])])
    with torch.no_grad():
        with intervene(model, ZEROED, "zero"):
            got = model(ids)
        want, plain = edited(ids).logits, hf(ids).logits
    assert (want - plain).abs().max() > 1e-3  # the edit matters, so the comparison can fail
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    # greedy generation under the intervention, two prompts of different lengths left-padded
    # together, against Hugging Face's own generate on the edited model, one prompt at a time
    prompts = ["The weather today", "Die Katze schläft auf der"]
    rows = [encode(tokenizer, p) for p in prompts]
    config = GenerationConfig(max_new_tokens=8, greedy=True)
    ours = generate_ids(model, rows, [Intervention(ZEROED, "zero")], "all", config, batch_size=2, seed=0,
                        progress=False)
    for row, new in zip(rows, ours):
        ids = torch.tensor([row])
        with torch.no_grad():
            ref = edited.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                                  pad_token_id=tokenizer.pad_token_id)[0, len(row):].tolist()
        if tokenizer.eos_token_id in ref:
            ref = ref[:ref.index(tokenizer.eos_token_id)]
        assert new == ref


def test_width_from_the_model_bounds_interventions(built):
    """XGLM's bridge config says d_mlp = 4 × d_model = 128; its MLP has 48 neurons: index 47 is
    accepted, 48 refused, never read or written at the config's width."""
    _, model = built("xglm")
    assert int(model.cfg.d_mlp) == 4 * archs.D_MODEL != archs.WIDTH  # the config default the package must not use
    with intervene(model, {0: [archs.WIDTH - 1]}, "zero"):
        pass
    with pytest.raises(LangNeuronsError, match=f"index {archs.WIDTH} of layer 0 out of range .*d_mlp={archs.WIDTH}"):
        with intervene(model, {0: [archs.WIDTH]}, "zero"):
            pass


@pytest.mark.parametrize("name", archs.MOE)
def test_mixture_of_experts_is_refused(tmp_path, tokenizer, name):
    folder = archs.save(name, tokenizer, tmp_path / name)
    expected = (r"mixture of experts \(\w+SparseMoeBlock, 4 experts\).*not each expert's neurons.*"
                r"\(expert, layer, index\) are not supported")
    with pytest.raises(LangNeuronsError, match=expected):
        load_model(folder)


def test_finetune_mask_width_is_the_down_projections(tokenizer):
    """A fine-tuning mask must have the width the package records at (the down projection's
    inputs), here 48 with a config default of 4 × 32 nowhere used."""
    from tl_langneurons.finetune.masks import NeuronMask
    from tl_langneurons.finetune.methods import FinetuneConfig, attach

    config = FinetuneConfig(method="selected-rows")
    attach(archs.hf_model("llama", tokenizer), config, NeuronMask({0: (archs.WIDTH - 1,)}, archs.LAYERS, archs.WIDTH,
                                                                  ("de",)))
    wide = NeuronMask({0: (0,)}, archs.LAYERS, 4 * archs.D_MODEL, ("de",))
    expected = f"mask is for 2 layers × 128 neurons, the model has 2 × {archs.WIDTH}$"
    with pytest.raises(LangNeuronsError, match=expected):
        attach(archs.hf_model("llama", tokenizer), config, wide)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_width_under_an_unmerged_lora_adapter_on_the_down_projection(tokenizer, name):
    """peft wraps the down projection in its own layer (no nn.Linear subclass): the width is still read."""
    from peft import LoraConfig, get_peft_model

    from tl_langneurons.loading import boot_hf

    target = {"llama": "down_proj", "gpt2": "c_proj"}[name]
    hf = get_peft_model(archs.hf_model(name, tokenizer), LoraConfig(r=2, target_modules=[target],
                                                                    fan_in_fan_out=name == "gpt2"))
    assert type(archs.down_projection(hf.base_model.model, 0)).__module__.startswith("peft")
    assert check_site(boot_hf(hf, tokenizer, name), "act").d_mlp == archs.WIDTH
