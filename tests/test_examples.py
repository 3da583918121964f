"""Top-activating examples (examples.py) against a naive top-k over every activation of the same
batches: values, sentences, positions, context windows and tie-breaking; units subsets, resume,
merges, files and argument checks. (Kill + resume and two torchrun processes: test_record_processes.py.)"""

import json

import pytest
import torch
from conftest import SENTENCES, n_hooks

from tl_langneurons import LangNeuronsError, LanguageNeurons, NeuronStats, load_model, record
from tl_langneurons.examples import TopKAccumulator, check_units, merge_entries
from tl_langneurons.models import check_site, forward_until
from tl_langneurons.record import Accumulator
from tl_langneurons.tokens import max_length, prepare_batches, tokenizer_of

# duplicated sentences: the same activations at the same positions of two sentences, a tie the
# order must break by sentence index
TEXTS = {k: v + v[:2] for k, v in SENTENCES.items()}


@pytest.fixture(scope="module")
def relu_llama(tmp_path_factory, tokenizer):
    """A tiny Llama whose MLP activation is ReLU: site ``act`` is exactly 0 on about half of all
    tokens, so the top k of a neuron is decided among many exact ties."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, hidden_act="relu",
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    d = tmp_path_factory.mktemp("relu_llama")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return load_model(str(d))


def naive_top(model, texts, k, context, batch_size):
    """Every counted token's activation (the recorder's batches, plain capturing hooks), sorted in
    Python by (value descending, sentence, position) and cut at k: ``{(lang, layer, index): [(value,
    sentence, position, window)]}``."""
    site = check_site(model, "act")
    batches, n_sent, _, _ = prepare_batches(tokenizer_of(model), texts, batch_size, max_length(model))
    first = [sum(list(n_sent.values())[:i]) for i in range(len(n_sent))]
    acts = {}
    hooks = [(name, lambda a, hook, l=l: acts.__setitem__(l, site.read(a).float()))
             for l, name in enumerate(site.hook_names)]
    langs = list(texts)
    rows = {lang: [] for lang in langs}  # per language: (values [layer, unit], sentence, position, window [W, layer, unit])
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for b in batches:
            forward_until(model, b.tokens, b.attention_mask)
            a = torch.stack([acts[layer] for layer in range(site.n_layers)], 2)  # [B, T, layer, unit]
            a = a * b.counted[:, :, None, None]  # BOS and padding are no context
            padded = torch.nn.functional.pad(a, (0, 0, 0, 0, context[0], context[1]))
            for row, pos in b.counted.nonzero().tolist():
                s = int(b.sentence_ids[row]) - first[b.language]
                rows[langs[b.language]].append((a[row, pos], s, pos, padded[row, pos:pos + sum(context) + 1]))
    found = {}
    for lang, entries in rows.items():
        values = torch.stack([e[0] for e in entries]).tolist()  # [token][layer][unit]
        for layer in range(site.n_layers):
            for unit in range(site.d_mlp):
                ranked = sorted(((values[j][layer][unit], s, p, j) for j, (_, s, p, _) in enumerate(entries)),
                                key=lambda e: (-e[0], e[1], e[2]))[:k]
                found[(lang, layer, unit)] = [(v, s, p, entries[j][3][:, layer, unit].tolist()) for v, s, p, j in ranked]
    return found


def _as_lists(top, lang, layer, unit):
    li, u = top.languages.index(lang), top.unit(layer, unit)
    return [(float(top.value[li, u, r]), int(top.sentence[li, u, r]), int(top.position[li, u, r]),
             top.window[li, u, r].tolist()) for r in range(top.k) if int(top.sentence[li, u, r]) >= 0]


@pytest.mark.parametrize("which, k, context", [("tiny_llama", 4, (2, 1)), ("relu_llama", 30, (3, 0))])
def test_streamed_top_k_equals_naive_top_k(which, k, context, request):
    model = request.getfixturevalue(which)
    stats = record(model, TEXTS, batch_size=3, top_examples=k, top_context=context, progress=False)
    top = stats.top_examples
    naive = naive_top(model, TEXTS, k, context, batch_size=3)
    ties = 0
    for (lang, layer, unit), want in naive.items():
        got = _as_lists(top, lang, layer, unit)
        assert got == want, (lang, layer, unit)
        ties += sum(a[0] == b[0] for a, b in zip(want, want[1:]))
    assert ties > 50  # the order among equal values was really tested
    # the token the model saw, and its text, at every example
    tok = tokenizer_of(model)
    for li, lang in enumerate(top.languages):
        for u in range(0, top.units.shape[0], 7):
            for r in range(top.k):
                s, p = int(top.sentence[li, u, r]), int(top.position[li, u, r])
                if s < 0:
                    continue
                ids = [tok.bos_token_id] + tok(TEXTS[lang][s], add_special_tokens=False)["input_ids"]
                assert top.texts[lang][s]["tokens"] == ids and ids[p] == int(top.token[li, u, r])
                assert "".join(top.texts[lang][s]["pieces"][1:]) == tok.decode(ids[1:])


def test_fewer_tokens_than_k_leave_empty_slots_and_units_subset_is_a_slice(tiny_llama):
    texts = {"en": ["Hi.", "Yes."], "de": ["Ja."]}
    full = record(tiny_llama, texts, top_examples=12, progress=False).top_examples
    n_tokens = {lang: sum(len(tiny_llama.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in v)
                for lang, v in texts.items()}
    for li, lang in enumerate(full.languages):
        assert int((full.sentence[li, 0] >= 0).sum()) == n_tokens[lang]  # the rest: empty slots
        assert (full.sentence[li, :, n_tokens[lang]:] == -1).all()
    neurons = LanguageNeurons({"en": [(2, 5), (0, 1)], "de": [(0, 1), (1, 47)]}, "test", {}, "act", {}, 3, 48)
    part = record(tiny_llama, texts, top_examples=12, top_units=neurons, progress=False).top_examples
    assert part.units.tolist() == [[0, 1], [1, 47], [2, 5]]
    rows = [full.unit(l, i) for l, i in part.units.tolist()]
    for name, t in part.tensors().items():
        if name != "units":
            assert torch.equal(t, getattr(full, name)[:, rows]), name


def test_merge_is_exact_in_any_order_and_the_memory_is_as_stated():
    torch.manual_seed(0)
    k, U, W = 5, 7, 3
    values = torch.randint(-3, 4, (U, 40)).float()  # many ties
    keys = torch.randperm(1000)[:40].repeat(U, 1)

    def entries(cols):
        idx = torch.tensor(cols).repeat(U, 1)
        return {"value": values.gather(1, idx), "key": keys.gather(1, idx), "token": keys.gather(1, idx).int(),
                "window": values.gather(1, idx)[..., None].repeat(1, 1, W)}

    def best(e):  # naive: sort all by (value descending, key)
        return [sorted(zip(e["value"][u].tolist(), e["key"][u].tolist()), key=lambda x: (-x[0], x[1]))[:k]
                for u in range(U)]

    parts = [entries(list(range(i, 40, 4))) for i in range(4)]
    want = best(entries(list(range(40))))
    one = merge_entries(merge_entries(parts[0], parts[1], k), merge_entries(parts[2], parts[3], k), k)
    two = merge_entries(parts[3], merge_entries(parts[1], merge_entries(parts[2], parts[0], k), k), k)
    for m in (one, two):
        got = [list(zip(m["value"][u].tolist(), m["key"][u].tolist())) for u in range(U)]
        assert got == want
    for name in one:
        assert torch.equal(one[name], two[name])
    units = check_units(None, 2, 10)
    acc = TopKAccumulator(3, units, 20, (8, 4), [0, 5, 9], 256, ["cpu", "cpu"])
    size = sum(t.numel() * t.element_size() for t in acc.state_dict().values())
    assert size == 20 * 20 * 3 * (16 + 4 * 13)  # k x units x languages x (16 + 4 (before + 1 + after))


def test_resume_after_an_interruption_is_bit_identical(tiny_llama, tmp_path, monkeypatch):
    texts = {k: v * 2 for k, v in SENTENCES.items()}
    ref = record(tiny_llama, texts, batch_size=2, top_examples=3, progress=False).top_examples
    calls, original = {"n": 0}, Accumulator.start_batch

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Accumulator, "start_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        record(tiny_llama, texts, batch_size=2, top_examples=3, checkpoint_dir=tmp_path, checkpoint_every=3,
               progress=False)
    monkeypatch.undo()
    assert n_hooks(tiny_llama) == 0
    resumed = record(tiny_llama, texts, batch_size=2, top_examples=3, checkpoint_dir=tmp_path, checkpoint_every=3,
                     resume=True, progress=False).top_examples
    for name, t in ref.tensors().items():
        assert torch.equal(t, resumed.tensors()[name]), name
    assert ref.texts == resumed.texts
    # a checkpoint of another k is refused, not mixed in
    monkeypatch.setattr(Accumulator, "start_batch", dies)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        record(tiny_llama, texts, batch_size=2, top_examples=3, checkpoint_dir=tmp_path, checkpoint_every=3,
               progress=False)
    monkeypatch.undo()
    with pytest.raises(LangNeuronsError, match="different recording"):
        record(tiny_llama, texts, batch_size=2, top_examples=4, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_saved_with_the_statistics_checked_on_load_and_merged_by_language(tiny_llama, tmp_path):
    both = record(tiny_llama, SENTENCES, top_examples=3, progress=False)
    both.save(tmp_path / "s")
    back = NeuronStats.load(tmp_path / "s")
    for name, t in both.top_examples.tensors().items():
        assert torch.equal(t, back.top_examples.tensors()[name]), name
    assert back.top_examples.texts == both.top_examples.texts and back.top_examples.context == (8, 4)
    # statistics recorded per language and merged hold exactly the examples of one recording
    en = record(tiny_llama, {k: SENTENCES[k] for k in ("en", "de")}, top_examples=3, progress=False)
    ru = record(tiny_llama, {k: SENTENCES[k] for k in ("ru", "ja")}, top_examples=3, progress=False)
    merged = en.merge(ru).top_examples
    for name, t in both.top_examples.tensors().items():
        assert torch.equal(t, merged.tensors()[name]), name
    assert en.select(["de"]).top_examples.languages == ["de"]
    with pytest.raises(LangNeuronsError, match="both hold language"):
        en.merge(en)
    with pytest.raises(LangNeuronsError, match="only the first statistics hold top_examples"):
        en.merge(record(tiny_llama, {"ja": SENTENCES["ja"]}, progress=False))
    # a tensor file from another recording, or a changed one, is refused
    other = record(tiny_llama, SENTENCES, top_examples=2, progress=False)
    other.save(tmp_path / "o")
    (tmp_path / "s" / "top_examples.safetensors").write_bytes((tmp_path / "o" / "top_examples.safetensors").read_bytes())
    with pytest.raises(LangNeuronsError, match="not the file"):
        NeuronStats.load(tmp_path / "s")
    meta = json.loads((tmp_path / "o" / "top_examples.json").read_text())
    meta["texts"]["en"] = {}
    (tmp_path / "o" / "top_examples.json").write_text(json.dumps(meta))
    with pytest.raises(LangNeuronsError, match="not the file|lacks the text"):
        NeuronStats.load(tmp_path / "o")


@pytest.mark.parametrize("kwargs, match", [
    ({"top_examples": 0}, "top_examples must be a positive integer"),
    ({"top_units": [(0, 1)]}, "give top_examples=K too"),
    ({"top_examples": 2, "pack": 16}, "cannot be combined with pack"),
    ({"top_examples": 2, "top_units": [(3, 0)]}, r"outside the model's 3 layers x 48"),
    ({"top_examples": 2, "top_units": []}, "names no unit"),
    ({"top_examples": 2, "top_context": (1,)}, "before, tokens after"),
    ({"top_examples": 2, "top_context": (-1, 2)}, r"top_context\[0\] must be an integer"),
])
def test_bad_arguments(tiny_llama, kwargs, match):
    with pytest.raises(LangNeuronsError, match=match):
        record(tiny_llama, SENTENCES, progress=False, **kwargs)


def test_record_command_top_examples_of_a_neuron_set(tiny_llama_dir, tmp_path):
    from tl_langneurons.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in ("en", "de"):
        (corpus / f"{lang}.txt").write_text("\n".join(SENTENCES[lang]) + "\n", encoding="utf-8")
    LanguageNeurons({"en": [(1, 3)], "de": [(2, 7), (1, 3)]}, "test", {}, "act", {}, 3, 48).save(tmp_path / "n.json")
    base = ["record", "--model", tiny_llama_dir, "--corpus", str(corpus), "--out", str(tmp_path / "s")]
    assert main(base + ["--top-examples", "2", "--top-units", str(tmp_path / "n.json"), "--top-context", "2,1"]) == 0
    top = NeuronStats.load(tmp_path / "s").top_examples
    assert top.units.tolist() == [[1, 3], [2, 7]] and top.k == 2 and top.context == (2, 1)
    assert top.frame().groupby(["language", "layer", "index"]).size().tolist() == [2, 2, 2, 2]
    assert main(base + ["--top-examples", "2", "--top-context", "2"]) == 2
    assert main(base + ["--top-units", str(tmp_path / "n.json")]) == 2
