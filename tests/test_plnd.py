"""PLND (Zhao et al. 2024): the importance equals switching neurons off one at a time; the recorded
document counts equal a hand computation; merging; the selection rules; the commands."""

import json

import pytest
import torch

from conftest import SENTENCES, n_hooks
from tl_langneurons import LangNeuronsError, record
from tl_langneurons.identify import plnd
from tl_langneurons.importance import activation_share, down_norms, mean_importance, top_count
from tl_langneurons.stats import NeuronStats
from tl_langneurons.tokens import encode


def test_importance_equals_switching_each_neuron_off(builtin_model):
    """On the built-in model: zero post_j (one neuron at a time), measure the layer output's change
    per token; it equals |post_j|·‖W_down[:, j]‖, and the recorder's importance_sum adds it up."""
    model = builtin_model
    sentence = SENTENCES["de"][1]
    ids = torch.tensor([encode(model.tokenizer, sentence)])
    norms = down_norms(model)
    stats = record(model, {"de": [sentence]}, plnd=True, progress=False)
    gen = torch.Generator().manual_seed(0)
    for layer in (0, 2, 5):
        out_name, post_name = f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.mlp.hook_post"
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=[out_name, post_name])
        base, post = cache[out_name][0], cache[post_name][0]
        for j in torch.randperm(model.cfg.d_mlp, generator=gen)[:6].tolist():
            def off(act, hook, j=j):
                act[..., j] = 0.0
                return act
            with torch.no_grad(), model.hooks(fwd_hooks=[(post_name, off)]):
                _, c2 = model.run_with_cache(ids, names_filter=[out_name])
            measured = (c2[out_name][0] - base).norm(dim=-1)  # [T]
            predicted = post[:, j].abs() * norms[layer, j]
            torch.testing.assert_close(measured, predicted, atol=2e-5, rtol=2e-4)
            # BOS never counts: the recorder's sum is over the sentence's own tokens
            assert stats.importance_sum[0, layer, j] == pytest.approx(float(measured[1:].sum()), rel=2e-4, abs=1e-5)
    assert n_hooks(model) == 0


def _hand_docs(model, texts: dict, top_rate: float):
    """Per language: documents activating each neuron and Σ|post|·‖W‖, from run_with_cache."""
    norms, L, I = down_norms(model), model.cfg.n_layers, model.cfg.d_mlp
    k = top_count(I, top_rate)
    docs, sums = torch.zeros(len(texts), L, I, dtype=torch.float64), torch.zeros(len(texts), L, I, dtype=torch.float64)
    for li, sents in enumerate(texts.values()):
        for s in sents:
            ids = torch.tensor([encode(model.tokenizer, s)])
            with torch.no_grad():
                _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("mlp.hook_post"))
            for l in range(L):
                post = cache[f"blocks.{l}.mlp.hook_post"][0, 1:].double()  # no BOS
                sums[li, l] += (post.abs() * norms[l].double()).sum(0)
                doc = post.pow(2).sum(0).sqrt() * norms[l].double()
                docs[li, l, torch.topk(doc, k).indices] += 1
    return docs, sums


@pytest.mark.parametrize("fixture,site", [("tiny_llama", "act"), ("tiny_llama", "post"), ("tiny_gpt2", "act")])
def test_recorded_documents_equal_a_hand_computation(fixture, site, request):
    model = request.getfixturevalue(fixture)
    texts = {k: SENTENCES[k] for k in ("en", "ru", "ja")}
    stats = record(model, texts, site=site, batch_size=3, plnd=True, plnd_top_rate=0.25, progress=False)
    docs, sums = _hand_docs(model, texts, 0.25)
    assert torch.equal(stats.importance_docs, docs)
    torch.testing.assert_close(stats.importance_sum, sums, rtol=1e-5, atol=1e-6)
    assert stats.n_documents.tolist() == [4.0, 4.0, 4.0]
    assert stats.meta["options"]["plnd_top_rate"] == 0.25
    # the site's own statistics are those of a recording without PLND (the pass still reaches them all)
    plain = record(model, texts, site=site, batch_size=3, progress=False)
    assert torch.equal(plain.count_pos, stats.count_pos) and torch.equal(plain.sum, stats.sum)


def test_merge_save_load_and_resume(tiny_llama, tmp_path, monkeypatch):
    texts = {k: SENTENCES[k] for k in ("en", "de")}
    full = record(tiny_llama, texts, batch_size=1, plnd=True, progress=False)
    a = record(tiny_llama, {k: v[:2] for k, v in texts.items()}, batch_size=1, plnd=True, progress=False)
    b = record(tiny_llama, {k: v[2:] for k, v in texts.items()}, batch_size=1, plnd=True, progress=False)
    merged = a.merge(b)
    assert torch.equal(merged.importance_docs, full.importance_docs)
    torch.testing.assert_close(merged.importance_sum, full.importance_sum)
    loaded = NeuronStats.load(full.save(tmp_path / "s"))
    assert torch.equal(loaded.importance_docs, full.importance_docs) and torch.equal(loaded.n_documents, full.n_documents)
    assert loaded.select(["de"]).importance_sum.shape[0] == 1
    with pytest.raises(LangNeuronsError, match="only the first statistics hold importance_sum"):
        full.merge(record(tiny_llama, texts, batch_size=1, progress=False))
    other = record(tiny_llama, texts, batch_size=1, plnd=True, plnd_top_rate=0.5, progress=False)
    with pytest.raises(LangNeuronsError, match="different plnd_top_rate"):
        full.merge(other)
    # a checkpoint holds the PLND sums: resuming after a crash gives the same numbers
    from tl_langneurons.record import Accumulator

    ck, calls, original = tmp_path / "ck", {"n": 0}, Accumulator.start_batch

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Accumulator, "start_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        record(tiny_llama, texts, batch_size=1, plnd=True, checkpoint_dir=ck, checkpoint_every=1, progress=False)
    monkeypatch.undo()
    assert n_hooks(tiny_llama) == 0
    resumed = record(tiny_llama, texts, batch_size=1, plnd=True, checkpoint_dir=ck, checkpoint_every=1,
                     resume=True, progress=False)
    assert torch.equal(resumed.importance_docs, full.importance_docs)
    assert torch.equal(resumed.importance_sum, full.importance_sum)


def _planted(shares: list[list[float]], imp: list[list[float]] | None = None) -> NeuronStats:
    """Statistics with one layer whose activation shares (of 10 documents per language) are given."""
    K, I = len(shares), len(shares[0])
    z = torch.zeros(K, 1, I, dtype=torch.float64)
    docs = torch.tensor(shares, dtype=torch.float64)[:, None] * 10
    isum = torch.tensor(imp if imp is not None else [[1.0] * I] * K, dtype=torch.float64)[:, None]
    return NeuronStats(["en", "de", "fr"][:K], "act", torch.ones(K, dtype=torch.float64), z, z.clone(), z.clone(),
                       meta={"options": {"plnd_top_rate": 0.14}}, importance_sum=isum, importance_docs=docs,
                       n_documents=torch.full((K,), 10.0, dtype=torch.float64))


def test_selection_rules():
    s = _planted([[1.0, 1.0, 1.0, 0.9, 0.0],
                  [1.0, 0.0, 1.0, 1.0, 0.2],
                  [1.0, 0.0, 0.5, 0.0, 1.0]])
    # neuron 0: every language (shared); 1: en only; 2: en and de; 3: de (en 90%); 4: fr
    assert plnd(s).neurons == {"en": [(0, 1)], "de": [(0, 3)], "fr": [(0, 4)]}
    assert plnd(s, exclude="all").neurons == {"en": [(0, 1), (0, 2)], "de": [(0, 2), (0, 3)], "fr": [(0, 4)]}
    assert plnd(s, consistency=0.9).neurons["en"] == [(0, 1)]  # 3 is now en's and de's
    assert plnd(s, consistency=0.9).neurons["de"] == []
    ranked = plnd(s, top_n=2)
    # en: contrasts 0, 1.0, 0.0, -0.1, -1.0 -> 1 first, then 0 and 2 tie on share; importance ties too: lower index
    assert ranked.neurons["en"] == [(0, 0), (0, 1)] and ranked.params["top_n"] == 2  # sets are kept sorted
    assert plnd(s, top_n=1).neurons == {"en": [(0, 1)], "de": [(0, 3)], "fr": [(0, 4)]}
    s2 = _planted([[1.0, 1.0], [1.0, 1.0]], imp=[[1.0, 3.0], [2.0, 1.0]])
    assert plnd(s2, top_n=1).neurons == {"en": [(0, 1)], "de": [(0, 0)]}  # importance breaks the share tie
    assert activation_share(s)[0, 0, 3] == pytest.approx(0.9)
    assert mean_importance(s2)[1, 0, 0] == pytest.approx(2.0)
    plain = NeuronStats(["en"], "act", torch.ones(1, dtype=torch.float64), *(torch.zeros(1, 1, 2, dtype=torch.float64),) * 3)
    with pytest.raises(LangNeuronsError, match="record with plnd=True"):
        plnd(plain)
    with pytest.raises(LangNeuronsError, match="unknown exclude 'some'"):
        plnd(s, exclude="some")
    with pytest.raises(LangNeuronsError, match="plnd_top_rate must be a number in \\(0, 1\\]"):
        top_count(8, 0.0)


def test_record_and_identify_commands(tiny_llama_dir, tmp_path):
    from tl_langneurons.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in ("en", "de", "ja"):
        (corpus / f"{k}.txt").write_text("\n".join(SENTENCES[k]), encoding="utf-8")
    st = tmp_path / "stats"
    assert main(["record", "--model", tiny_llama_dir, "--corpus", str(corpus), "--plnd", "--plnd-top-rate", "0.3",
                 "--out", str(st)]) == 0
    assert NeuronStats.load(st).importance_docs is not None
    out = tmp_path / "n.json"
    assert main(["identify", "--stats", str(st), "--method", "plnd", "--top-n", "5", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["method"] == "plnd" and all(len(v) == 5 for v in got["neurons"].values())
    assert main(["identify", "--stats", str(st), "--method", "lape", "--top-n", "5", "--out", str(out)]) == 2
