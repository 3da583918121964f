"""One copy of a model dispatched by Hugging Face/accelerate (``load_model(device_map=...)``)
against the same model loaded whole, on the CPU.

The built-in 6-layer Llama is split by a dict ``device_map``: the embedding (tied to the
unembedding) and layers 1, 3, 5 offloaded to disk, the rest on the CPU. The offloaded modules
hold ``meta`` placeholders that accelerate fills from the checkpoint around each call, so the
dispatch path runs for real here (hooks on offloaded layers, ``cfg.device`` from an offloaded
embedding, weights read from the offload). What a CPU cannot show is activations on two GPUs:
every layer here computes on the CPU.

Measured: recordings, NLLs and greedy generations are bit-identical to the undispatched model's
(the same kernels on the same values), and the weights hash is the same.
"""

import json
import tempfile
from contextlib import nullcontext

import pytest
import torch
from conftest import SENTENCES, n_hooks

from tl_langneurons import Intervention, LangNeuronsError, load_model, record
from tl_langneurons.evaluate.generation import GenerationConfig, generate_tokens
from tl_langneurons.evaluate.scoring import nll_sums
from tl_langneurons.intervene import diffmean, intervene
from tl_langneurons.models import check_site, fingerprint, weights_hash
from tl_langneurons.record import Accumulator
from tl_langneurons.tokens import left_pad, pad_id, prepare_batches, tokenizer_of

OFFLOADED = (1, 3, 5)
NEURONS = {1: [0, 7, 100, 511], 4: [3, 64, 900]}


def split_map() -> dict:
    dm = {"model.embed_tokens": "disk", "lm_head": "disk", "model.rotary_emb": "cpu", "model.norm": "cpu"}
    dm.update({f"model.layers.{l}": "disk" if l in OFFLOADED else "cpu" for l in range(6)})
    return dm


@pytest.fixture(scope="module")
def dispatched(tmp_path_factory):
    return load_model("builtin", device_map=split_map(), offload_folder=str(tmp_path_factory.mktemp("offload")))


@pytest.fixture(scope="module")
def texts():
    return {k: SENTENCES[k] for k in ("en", "de", "ru")}


def test_the_model_is_really_split(dispatched):
    hf = dispatched.original_model
    assert set(hf.hf_device_map.values()) == {"cpu", "disk"}
    for l in range(6):  # offloaded layers hold meta placeholders, the others their weights
        kind = {p.device.type for p in hf.model.layers[l].parameters()}
        assert kind == ({"meta"} if l in OFFLOADED else {"cpu"}), l
    assert hf.model.embed_tokens.weight.device.type == "meta"
    # TL reads the input device off the embedding's parameter, a placeholder here: tokens go
    # where accelerate runs the embedding
    assert dispatched.cfg.device == "cpu"
    assert check_site(dispatched, "act").devices == ("cpu",) * 6


def test_weights_hash_reads_the_offloaded_weights(dispatched, builtin_model):
    assert weights_hash(dispatched) == weights_hash(builtin_model)
    assert fingerprint(dispatched) == fingerprint(builtin_model)


def test_weights_hash_refuses_meta_parameters_with_nothing_behind_them():
    with pytest.raises(LangNeuronsError, match="meta device with no offloaded values"):
        weights_hash(torch.nn.Linear(3, 2, device="meta"))


def test_recording_equals_the_undispatched_model_bit_for_bit(dispatched, builtin_model, texts):
    kw = dict(site="act", batch_size=2, sentence_means=True, histogram_edges=True, progress=False)
    a, b = record(builtin_model, texts, **kw), record(dispatched, texts, **kw)
    for name in ("n_tokens", "count_pos", "sum", "sum_sq", "sentence_means", "hist"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.activation_probability(), b.activation_probability())
    assert a.meta["model"] == b.meta["model"]
    assert n_hooks(dispatched) == 0


def _nll(model, texts, items):
    batches = prepare_batches(tokenizer_of(model), texts, 4, 64).batches
    sums, counts = nll_sums(model, batches, len(texts), items, progress=False)
    return sums / counts


def test_interventions_give_the_undispatched_nll(dispatched, builtin_model, texts):
    zero = [Intervention(NEURONS, "zero")]
    direction = diffmean(builtin_model, texts, "de", layer=3, beta=4.0, progress=False)
    # the direction itself is read through the offloaded layers the same way
    assert torch.equal(diffmean(dispatched, texts, "de", layer=3, beta=4.0, progress=False).direction,
                       direction.direction)
    clean = _nll(builtin_model, texts, [])
    for items in (zero, [direction]):
        ref = _nll(builtin_model, texts, items)
        assert not torch.equal(ref, clean)  # the intervention does something
        assert torch.equal(_nll(dispatched, texts, items), ref)


def test_greedy_generation_under_an_intervention_gives_the_same_tokens(dispatched, builtin_model):
    tok = tokenizer_of(builtin_model)
    rows = [tok("Die Katze")["input_ids"], tok("The market")["input_ids"]]
    tokens, mask = left_pad(rows, pad_id(tok))
    gen = GenerationConfig(max_new_tokens=10, greedy=True, stop_at_eos=False)
    steer = [Intervention({l: list(range(0, 1792, 7)) for l in OFFLOADED}, "scale", factor=6.0)]

    def run(model, items):
        with torch.no_grad(), (intervene(model, items) if items else nullcontext()):
            return generate_tokens(model, tokens, mask, gen)

    ref = run(builtin_model, steer)
    assert not torch.equal(ref, run(builtin_model, []))  # the intervention changes the text
    assert torch.equal(run(dispatched, steer), ref)
    assert n_hooks(dispatched) == 0


def test_no_hook_remains_after_an_exception(dispatched, texts, monkeypatch):
    tokens = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        before = dispatched(tokens)
    with pytest.raises(RuntimeError, match="inside"):
        with intervene(dispatched, NEURONS, "zero"):
            assert n_hooks(dispatched) > 0
            raise RuntimeError("inside")
    assert n_hooks(dispatched) == 0

    def fails(self):
        raise RuntimeError("mid-recording")

    monkeypatch.setattr(Accumulator, "end_batch", fails)
    with pytest.raises(RuntimeError, match="mid-recording"):
        record(dispatched, texts, batch_size=2, progress=False)
    assert n_hooks(dispatched) == 0
    with torch.no_grad():  # accelerate's offload hooks are untouched: the same logits
        assert torch.equal(dispatched(tokens), before)


def test_auto_map_with_a_memory_budget(builtin_model, tmp_path):
    """The README's recipe, device_map="auto" with max_memory, on a CPU budget too small for the model."""
    model = load_model("builtin", device_map="auto", max_memory={"cpu": "30MB", "disk": "1GB"},
                       offload_folder=str(tmp_path))
    assert "disk" in model.original_model.hf_device_map.values()
    assert weights_hash(model) == weights_hash(builtin_model)


def test_each_layers_sums_live_on_its_activations_device():
    from tl_langneurons.units import Part, Site

    s = Site("pre", "pre", True, 3, 4, tuple((Part(h, 4),) for h in ("a", "b", "c")), ("cpu", "cpu", "meta"))
    acc = Accumulator(2, s, 0, False, None, s.devices)
    assert [t.device.type for t in acc.sum] == ["cpu", "cpu", "meta"]
    with pytest.raises(LangNeuronsError, match="one device per layer"):
        Accumulator(2, s, 0, False, None, ["cpu"])
    # an activation that is not where the layer's sums are is refused, not copied
    with pytest.raises(LangNeuronsError, match="activation is on cpu, its sums on meta"):
        acc.hook(2)(torch.zeros(1, 2, 4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="cpu", device_map="auto"), "exclude each other"),
    (dict(max_memory={0: "1GiB"}), "needs a device_map"),
    (dict(offload_folder="/tmp/x"), "needs a device_map"),
    (dict(device_map="everywhere"), "unknown device_map 'everywhere'"),
    (dict(device_map={}), "non-empty"),
    (dict(device_map={"model": "meta"}), "'meta' holds no weights"),
    (dict(device_map={"model": True}), "must be a GPU index"),
    (dict(device_map={"model": 0, "lm_head": "disk"}), "mixes GPU targets"),
    (dict(device_map={"model": "cuda:0", "lm_head": "cpu"}), "mixes GPU targets"),
    (dict(device_map="auto", max_memory={"gpu0": "1GiB"}), "max_memory key 'gpu0'"),
    (dict(device_map="auto", max_memory={0: "lots"}), r"max_memory\[0\]"),
    (dict(device_map={"model.embed_tokens": "cpu"}), "places no device for parameter 'model.layers.0"),
    (dict(device_map={**split_map(), "model.decoder": "cpu"}), "'model.decoder', which is not a module"),
])
def test_placement_mistakes_are_refused_before_loading(kwargs, message):
    with pytest.raises(LangNeuronsError, match=message):
        load_model("builtin", **kwargs)


def test_command_line_device_map(tmp_path, builtin_model, capsys):
    from tl_langneurons import load_corpus
    from tl_langneurons.cli import main
    from tl_langneurons.stats import NeuronStats

    for argv, message in ((["--device", "cpu", "--device-map", "auto"], "exclude each other"),
                          (["--device-map", "auto", "--max-memory", "{0: 1}"], "--max-memory"),
                          (["--device-map", "{'model': 0}"], "--device-map"),
                          (["--max-memory", '{"0": "1GiB"}'], "needs a device_map")):
        assert main(["record", *argv, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    dm = tmp_path / "map.json"
    dm.write_text(json.dumps(split_map()))
    out = tmp_path / "stats"
    assert main(["record", "--device-map", str(dm), "--offload-folder", tempfile.mkdtemp(dir=tmp_path),
                 "--languages", "en,de", "--max-sentences", "6", "--batch-size", "3", "--out", str(out)]) == 0
    got = NeuronStats.load(out)
    ref = record(builtin_model, load_corpus("builtin", languages=["en", "de"], split="stats", max_sentences=6),
                 batch_size=3, progress=False)
    assert torch.equal(got.sum, ref.sum) and torch.equal(got.count_pos, ref.count_pos)
