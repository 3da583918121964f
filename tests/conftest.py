"""Shared fixtures: tiny random models built offline in a fraction of a second, and the built-in model.

Tiny models reuse the built-in model's tokenizer (real multilingual BPE), so they see real
token sequences, and are saved as standard Hugging Face directories so that ``load_model`` loads
them exactly as it loads any local model.

The very first thing: jaxtyping's import hook, so that every function and dataclass of the package
has its annotations (tensor shapes and dtypes included) checked by beartype for the whole test
run. It must come before anything imports ``tl_langneurons``: a module imported earlier is not
instrumented (``test_typecheck.py`` fails if this ever stops working).
"""

from jaxtyping import install_import_hook

install_import_hook("tl_langneurons", "beartype.beartype")

import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from tl_langneurons.sources import builtin_model_path  # noqa: E402

# Tiny models run fastest on one thread; a shared machine can ask for fewer threads than cores.
torch.set_num_threads(int(os.environ.get("TL_LANGNEURONS_TEST_THREADS", torch.get_num_threads())))

SENTENCES = {
    # Written for these tests: text the package never saw.
    "en": ["The cat sleeps on the warm windowsill.", "We bought three apples at the market today.",
           "Rain is expected tomorrow afternoon.", "She plays the violin every evening."],
    "de": ["Die Katze schläft auf der warmen Fensterbank.", "Wir haben heute drei Äpfel auf dem Markt gekauft.",
           "Morgen Nachmittag wird Regen erwartet.", "Sie spielt jeden Abend Geige."],
    "ru": ["Кошка спит на тёплом подоконнике.", "Сегодня мы купили три яблока на рынке.",
           "Завтра днём ожидается дождь.", "Она играет на скрипке каждый вечер."],
    "ja": ["猫は暖かい窓辺で眠っています。", "今日は市場でりんごを三つ買いました。",
           "明日の午後は雨が降る予報です。", "彼女は毎晩バイオリンを弾きます。"],
}


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_model_path())


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tokenizer():
    return _tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return _save(LlamaForCausalLM(cfg), tokenizer, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=256,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _save(GPT2LMHeadModel(cfg), tokenizer, tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from tl_langneurons import load_model

    return load_model(tiny_llama_dir)


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    from tl_langneurons import load_model

    return load_model(tiny_gpt2_dir)


@pytest.fixture(scope="session")
def builtin_model():
    from tl_langneurons import load_model

    return load_model("builtin")


def analysis_script(name: str):
    """``analyses/<name>.py`` loaded as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "analyses" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def n_hooks(model) -> int:
    """Hooks currently registered on any hook point of the model."""
    total = 0
    for hp in model.hook_dict.values():
        total += len(hp._forward_hooks) + len(hp._backward_hooks) + len(getattr(hp, "_forward_pre_hooks", {}))
    return total


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M, loaded once for the whole `real` tier (dequantized into the cache on first use)."""
    from tl_langneurons import load_model

    return load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_hf(gemma):
    """A fresh Hugging Face model from the same folder: the oracle the bridge is compared with."""
    from transformers import AutoModelForCausalLM

    from tl_langneurons.sources import builtin_model_path

    return AutoModelForCausalLM.from_pretrained(builtin_model_path("gemma-3-270m"), dtype=torch.float32).eval()


def assert_greedy_is_hugging_face(model, hf, prompts: list[str], max_new_tokens: int) -> None:
    """Greedy steering generations (with a scale-1 intervention, which must change nothing) equal a
    fresh Hugging Face model's own ``generate`` on the same BOS + prompt tokens."""
    from tl_langneurons import Intervention
    from tl_langneurons import evaluate as ev
    from tl_langneurons.tokens import encode

    got = ev.steer_with(model, "de", [Intervention({0: [0]}, "scale", factor=1.0)], prompts=prompts,
                        generation=ev.GenerationConfig(max_new_tokens=max_new_tokens, greedy=True), progress=False)
    base = list(got[got.condition == "baseline"].generation)
    assert list(got[got.condition == "intervention"].generation) == base
    tok = model.tokenizer
    for prompt, text in zip(prompts, base):
        ids = torch.tensor([encode(tok, prompt)])
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in ref:
            ref = ref[:ref.index(tok.eos_token_id)]
        assert text == tok.decode(ref, skip_special_tokens=True).strip(), prompt
