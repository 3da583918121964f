"""The extension seams: a toy entry registered with one call runs end to end, touching no other file.

* mode ``negate`` (``a := -a``): through :func:`intervene` on the built-in model it equals negating
  the neurons' columns of the down projection; the command line offers it and runs it (``lss``);
* method ``top-p-by-mean``: ``identify --method top-p-by-mean`` equals a hand-computed ranking, its
  option shared with LAPE's;
* the back-end objects under the TransformerBridge: ownership, the wrapped model, generation (= the
  Hugging Face model's own ``generate``), the lm-eval adapter.
"""

import json

import pytest
import torch
from conftest import n_hooks

from tl_langneurons import models
from tl_langneurons.backends import backend_of
from tl_langneurons.cli import build_parser, main
from tl_langneurons.errors import LangNeuronsError
from tl_langneurons.identity import fingerprint
from tl_langneurons.intervene import Intervention, intervene
from tl_langneurons.intervene.modes import MODES, Mode, mode_names, register_mode, unregister_mode
from tl_langneurons.neurons import LanguageNeurons

NEURONS = {0: [3, 17, 200], 4: [1, 1000]}  # built-in model: 6 layers × 1792


# ---------------------------------------------------------------------------------------------
# a toy intervention mode


@pytest.fixture
def negate():
    mode = register_mode(Mode("negate", lambda a, v, factor: -a, "a := -a", steers=True, tasks=True))
    yield mode
    unregister_mode("negate")
    assert "negate" not in MODES


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def test_a_registered_mode_runs_through_intervene(negate, builtin_model):
    model = builtin_model
    tokens = model.to_tokens(["Der Hund schläft im Garten.", "The cat sat on the mat today."])
    clean = _logits(model, tokens)
    with intervene(model, NEURONS, "negate"):  # site act: φ(gate) of a gated MLP, written through post
        got = _logits(model, tokens)
    assert n_hooks(model) == 0
    # the oracle: a := -a for neuron i of layer l is column i of that layer's down projection negated
    def negate_down():  # the bridge's Hugging Face down_proj [d_model, d_mlp], or TL 3.x's W_out [d_mlp, d_model]
        hf = backend_of(model).hf_model(model)
        for l, idx in NEURONS.items():
            if hf is not None:
                hf.model.layers[l].mlp.down_proj.weight[:, idx] *= -1
            else:
                model.blocks[l].mlp.W_out[idx, :] *= -1

    with torch.no_grad():
        negate_down()
        try:
            expected = _logits(model, tokens)
        finally:
            negate_down()  # exact: negation is its own inverse
    assert torch.equal(_logits(model, tokens), clean)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (got - clean).abs().max() > 1e-2  # it did something
    # the registry's argument checks apply to it: it takes nothing
    with pytest.raises(LangNeuronsError, match="mode 'negate' takes no factor"):
        Intervention(NEURONS, "negate", factor=2.0)


def test_a_registered_mode_is_offered_and_run_by_the_command_line(negate, builtin_model, tmp_path, monkeypatch,
                                                                   capsys):
    assert "negate" in mode_names(steers=True) and "negate" in mode_names(tasks=True)
    sub = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["lss"]._actions}
    assert "negate" in sub["mode"].choices and "negate (a := -a)" in sub["mode"].help
    tasks = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["tasks"]._actions}
    assert "negate" in tasks["mode"].choices

    monkeypatch.setattr(models, "load_model", lambda *a, **k: builtin_model)
    L, I = builtin_model.cfg.n_layers, builtin_model.cfg.d_mlp
    pairs = [(l, i) for l, ix in NEURONS.items() for i in ix]
    path = tmp_path / "neurons.json"
    LanguageNeurons({"en": pairs[:2], "de": pairs}, "manual", {}, "act", fingerprint(builtin_model), L, I).save(path)
    from tl_langneurons import evaluate as ev

    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"format": "tl_langneurons.facts/1", "languages": ["en", "de"],
                                 "items": ev.load_facts(languages=["en", "de"])[:2]}, ensure_ascii=False),
                     encoding="utf-8")
    out = tmp_path / "lss"
    assert main(["lss", "--neurons", str(path), "--source", "en", "--target", "de", "--facts", str(facts),
                 "--mode", "negate", "--control", "none", "--out", str(out)]) == 0
    assert n_hooks(builtin_model) == 0
    import pandas as pd

    df = pd.read_csv(out / "lss.csv")
    assert set(df["mode"]) == {"negate"}
    base, iv = (df[df.condition == c].set_index("item") for c in ("baseline", "intervention"))
    # the intervention rows are the library's own negate on the target's neurons
    items = ev.load_facts(str(facts), languages=["en", "de"])
    expected = ev.lss(builtin_model, LanguageNeurons.load(path), items, "en", "de", mode="negate", control=None)
    pd.testing.assert_series_equal(iv["logp_target"], expected[expected.condition == "intervention"]
                                   .set_index("item")["logp_target"], check_exact=False, atol=1e-6)
    assert not (base["logp_target"] - iv["logp_target"]).abs().lt(1e-6).all()


# ---------------------------------------------------------------------------------------------
# a toy identification method

def top_p_by_mean(stats, top_rate: float = 0.25):
    """Each language's ``top_rate`` share of neurons of highest mean activation (ties: lower index)."""
    from tl_langneurons.identify import smallest_indices

    L, I = stats.n_layers, stats.d_mlp
    mean = stats.mean().numpy()
    n = round(top_rate * L * I)
    picked = {lang: [divmod(int(f), I) for f in smallest_indices(-mean[k].reshape(-1), n)]
              for k, lang in enumerate(stats.languages)}
    return LanguageNeurons(picked, "top-p-by-mean", {"top_rate": top_rate}, stats.site, stats.model, L, I)


@pytest.fixture
def toy_method():
    from tl_langneurons.identify.methods import METHODS as registered, Method, Option, register_method, \
        unregister_method

    m = register_method(Method("top-p-by-mean", top_p_by_mean, "each language's top share of neurons by mean",
                               options=(Option("top_rate", float, "share of neurons per language"),)))
    yield m
    unregister_method("top-p-by-mean")
    assert "top-p-by-mean" not in registered


def _toy_stats(tmp_path):
    from tl_langneurons.stats import NeuronStats

    g = torch.Generator().manual_seed(1)
    K, L, I = 3, 2, 10
    n = torch.tensor([50.0, 40.0, 60.0], dtype=torch.float64)
    s = torch.randn(K, L, I, generator=g, dtype=torch.float64) * n[:, None, None]
    stats = NeuronStats(["de", "en", "fr"], "act", n, torch.round(n[:, None, None] * 0.5).expand(K, L, I).clone(), s,
                        s * s, meta={"model": {"name": "toy", "weights_hash": "ab" * 16}})
    stats.save(tmp_path / "stats")
    return stats, str(tmp_path / "stats")


def test_a_registered_method_runs_through_identify(toy_method, tmp_path, capsys):
    stats, d = _toy_stats(tmp_path)
    out = tmp_path / "n.json"
    assert main(["identify", "--stats", d, "--method", "top-p-by-mean", "--top-rate", "0.1", "--out", str(out)]) == 0
    got = LanguageNeurons.load(out)
    # the hand-computed oracle: per language, the 2 of 20 neurons of highest sum / n_tokens
    for k, lang in enumerate(stats.languages):
        mean = (stats.sum[k] / stats.n_tokens[k]).reshape(-1)
        top = sorted(range(20), key=lambda f: (-float(mean[f]), f))[:2]
        assert sorted(got.by_layer(lang).items()) == sorted(
            {l: sorted(f % 10 for f in top if f // 10 == l) for l in {f // 10 for f in top}}.items())
    assert got.method == "top-p-by-mean" and got.params == {"top_rate": 0.1}
    # its default is the function's; the option is shared with lape (one flag, both defaults in the help)
    assert main(["identify", "--stats", d, "--method", "top-p-by-mean", "--out", str(tmp_path / "d.json")]) == 0
    assert LanguageNeurons.load(tmp_path / "d.json").params == {"top_rate": 0.25}
    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["identify"]._actions}
    assert "top-p-by-mean" in actions["method"].choices
    assert "(--method lape, top-p-by-mean)" in actions["top_rate"].help
    assert actions["top_rate"].shown_default() == "lape 0.01; top-p-by-mean 0.25"
    # options of other methods are refused naming their owner, before the statistics are read
    capsys.readouterr()
    assert main(["identify", "--stats", str(tmp_path / "nowhere"), "--method", "top-p-by-mean", "--top-m", "3",
                 "--out", str(out)]) == 2
    assert "--top-m is an option of --method threshold, not of --method top-p-by-mean" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the back-end objects, under the TransformerBridge


@pytest.mark.skipif(models.backend() != "bridge", reason="the TransformerBridge back end (TL >= 4.3)")
def test_the_bridge_back_end(builtin_model):
    from tl_langneurons.backends import BACKENDS, BRIDGE, HOOKED, backend_of, installed_backend
    from tl_langneurons.evaluate.generation import GenerationConfig, generate_tokens

    model = builtin_model
    assert installed_backend() is BRIDGE and backend_of(model) is BRIDGE and not HOOKED.owns(model)
    assert [b.name for b in BACKENDS] == ["bridge", "hooked"] and not HOOKED.installed()
    assert BRIDGE.hf_model(model) is model.original_model and BRIDGE.dispatches and BRIDGE.wraps_in_memory
    assert BRIDGE.call_start[0] in model.hook_dict
    with pytest.raises(LangNeuronsError, match="got Linear"):
        backend_of(torch.nn.Linear(2, 2))
    # generation is the wrapped Hugging Face model's own generate
    from tl_langneurons.tokens import encode, left_pad, pad_id

    tokens, mask = left_pad([encode(model.tokenizer, p) for p in ("Der Hund", "The cat sat on")], pad_id(model.tokenizer))
    gen = GenerationConfig(greedy=True, max_new_tokens=3, stop_at_eos=False)
    with torch.no_grad():
        hf = model.original_model.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=3, min_new_tokens=3,
                                           do_sample=False, pad_token_id=pad_id(model.tokenizer))
    assert torch.equal(BRIDGE.generate(model, tokens, mask, gen), hf)
    assert torch.equal(generate_tokens(model, tokens, mask, gen), hf)
    # lm-eval scores the wrapped model
    pytest.importorskip("lm_eval")
    from tl_langneurons.tasks.lm import task_lm

    assert task_lm(model, batch_size=2).model is model.original_model
