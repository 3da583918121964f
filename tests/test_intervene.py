"""Interventions against oracles: hooks equal edits of the Hugging Face weights and modules; identity
interventions change nothing; positions touch only what they name (also during generation, with
and without a KV cache); no hook survives the context; mismatched artifacts are refused."""

import copy

import pytest
import torch
from conftest import SENTENCES, n_hooks

from tl_langneurons import LangNeuronsError, NeuronStats
from tl_langneurons.models import fingerprint
from tl_langneurons.neurons import LanguageNeurons

from tl_langneurons.intervene import (DiffMean, Intervention, SiteCache, cache_site_activations, diffmean, diffmeans,
                                      intervene, make_hooks)

LLAMA_NEURONS = {0: [1, 5, 7, 30], 2: [3, 40, 47]}
GPT2_NEURONS = {0: [2, 9, 63], 1: [0, 17]}


@pytest.fixture(scope="module")
def hf_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_gpt2(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokens(tokenizer):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(10, len(tokenizer), (2, 7), generator=g)
    t[:, 0] = tokenizer.bos_token_id
    return t


@pytest.fixture(scope="module")
def llama_stats(tiny_llama):
    """Synthetic statistics at site act of the tiny Llama: mean, sentence means and histogram."""
    g = torch.Generator().manual_seed(1)
    L, I = tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp
    edges = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    return NeuronStats(["de", "fr"], "act", torch.tensor([10.0, 20.0], dtype=torch.float64),
                       torch.zeros(2, L, I, dtype=torch.float64), torch.randn(2, L, I, generator=g).double() * 5,
                       torch.zeros(2, L, I, dtype=torch.float64), torch.rand(6, L, I, generator=g),
                       torch.tensor([0, 0, 0, 1, 1, 1]), torch.randint(0, 5, (2, L, I, 22), generator=g).double(),
                       edges, {"model": fingerprint(tiny_llama)})


def run(model, toks):
    with torch.no_grad():
        return model(toks)


def hf_run(hf, toks):
    with torch.no_grad():
        return hf(input_ids=toks).logits


def record_at(model, names, fn):
    """Activations (after every hook registered before) at ``names`` while ``fn()`` runs, one list per name."""
    seen = {n: [] for n in names}
    hooks = [(n, (lambda n: lambda act, hook: seen[n].append(act.detach().clone()))(n)) for n in names]
    with model.hooks(fwd_hooks=hooks):
        out = fn()
    return out, seen


class EditAct(torch.nn.Module):
    """Stands in for an HF MLP's act_fn: φ, then ``edit(φ(gate))``."""

    def __init__(self, fn, edit):
        super().__init__()
        self.fn, self.edit = fn, edit

    def forward(self, x):
        return self.edit(self.fn(x).clone())


def edited_llama(hf, edits):
    """A copy of the HF Llama whose layer ``l`` act_fn output goes through ``edits[l]``."""
    hf2 = copy.deepcopy(hf)
    for l, edit in edits.items():
        mlp = hf2.model.layers[l].mlp
        mlp.act_fn = EditAct(mlp.act_fn, edit)
    return hf2


def test_bridge_matches_hf(tiny_llama, hf_llama, tiny_gpt2, hf_gpt2, tokens):
    # the premise of every weight-edit oracle below
    torch.testing.assert_close(run(tiny_llama, tokens), hf_run(hf_llama, tokens), atol=1e-5, rtol=0)
    torch.testing.assert_close(run(tiny_gpt2, tokens), hf_run(hf_gpt2, tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,site,factor", [("llama", "act", 0.0), ("llama", "post", 0.0), ("llama", "act", 2.5),
                                              ("gpt2", "act", 0.0), ("gpt2", "post", -0.5)])
def test_zero_and_scale_equal_editing_the_down_projection(request, arch, site, factor, tokens):
    model, hf = request.getfixturevalue(f"tiny_{arch}"), request.getfixturevalue(f"hf_{arch}")
    layers = LLAMA_NEURONS if arch == "llama" else GPT2_NEURONS
    hf2 = copy.deepcopy(hf)
    with torch.no_grad():
        for l, idx in layers.items():
            if arch == "llama":
                hf2.model.layers[l].mlp.down_proj.weight[:, idx] *= factor  # [d_model, d_mlp]
            else:
                hf2.transformer.h[l].mlp.c_proj.weight[idx, :] *= factor  # Conv1D: [d_mlp, d_model]
    mode = dict(mode="zero") if factor == 0.0 else dict(mode="scale", factor=factor)
    with intervene(model, layers, site=site, **mode):
        got = run(model, tokens)
    torch.testing.assert_close(got, hf_run(hf2, tokens), atol=1e-5, rtol=0)
    assert not torch.allclose(got, run(model, tokens), atol=1e-4)  # it did something


@pytest.mark.parametrize("arch,site", [("llama", "act"), ("llama", "pre"), ("llama", "post"), ("gpt2", "act"),
                                       ("gpt2", "pre")])
def test_scale_by_one_and_self_patch_change_nothing(request, arch, site, tokens):
    model = request.getfixturevalue(f"tiny_{arch}")
    layers = LLAMA_NEURONS if arch == "llama" else GPT2_NEURONS
    clean = run(model, tokens)
    with intervene(model, layers, "scale", factor=1.0, site=site):
        torch.testing.assert_close(run(model, tokens), clean, atol=1e-6, rtol=0)
    cache = cache_site_activations(model, tokens, layers, site=site)
    assert sorted(cache.values) == sorted(layers) and cache.site == site
    with intervene(model, layers, "patch", source=cache, site=site):
        torch.testing.assert_close(run(model, tokens), clean, atol=1e-6, rtol=0)


def test_patch_equals_setting_the_other_runs_values(tiny_llama, hf_llama, tokens):
    other = tokens.flip(0)
    cache = cache_site_activations(tiny_llama, other, LLAMA_NEURONS)  # φ(gate) of the other input
    edits = {l: (lambda idx, v: lambda y: y.index_copy(-1, torch.tensor(idx), v))(idx, cache.values[l][..., idx])
             for l, idx in LLAMA_NEURONS.items()}
    with intervene(tiny_llama, LLAMA_NEURONS, "patch", source=cache):
        got = run(tiny_llama, tokens)
    torch.testing.assert_close(got, hf_run(edited_llama(hf_llama, edits), tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["act", "pre", "post"])
def test_set_equals_editing_the_hf_module(tiny_llama, hf_llama, tokens, site):
    v = 1.75
    hf2 = copy.deepcopy(hf_llama)
    for l, idx in LLAMA_NEURONS.items():
        mlp = hf2.model.layers[l].mlp
        if site == "act":  # φ(gate)_j := v inside the module
            mlp.act_fn = EditAct(mlp.act_fn, (lambda idx: lambda y: y.index_fill(-1, torch.tensor(idx), v))(idx))
        elif site == "pre":  # gate_j := v
            mlp.gate_proj.register_forward_hook((lambda idx: lambda m, a, o: o.index_fill(-1, torch.tensor(idx), v))(idx))
        else:  # input of down_proj := v
            mlp.down_proj.register_forward_pre_hook(
                (lambda idx: lambda m, a: (a[0].index_fill(-1, torch.tensor(idx), v),))(idx))
    with intervene(tiny_llama, LLAMA_NEURONS, "set", value=v, site=site):
        got = run(tiny_llama, tokens)
    torch.testing.assert_close(got, hf_run(hf2, tokens), atol=1e-5, rtol=0)


def test_add_and_combination_equal_editing_phi(tiny_llama, hf_llama, tokens, llama_stats):
    """``add`` is ``a + α·μ``; Gurgurov's "source off, target on" applies in the order given."""
    mu = llama_stats.mean()[1]  # fr
    alpha = 1.5
    src = {0: [1, 2, 3], 2: [3, 4]}  # layer 2 neuron 3 is in both: zeroed first, then added to
    tgt = LanguageNeurons({"fr": [(0, 5), (0, 30), (2, 3), (2, 47)]}, "manual", {}, "act", fingerprint(tiny_llama),
                          tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp)

    def edit(l):
        def f(y):
            y[..., src.get(l, [])] = 0.0
            idx = tgt.by_layer().get(l, [])
            y[..., idx] = y[..., idx] + alpha * mu[l, idx].float()
            return y
        return f

    expected = hf_run(edited_llama(hf_llama, {0: edit(0), 2: edit(2)}), tokens)
    with intervene(tiny_llama, [Intervention(src, "set", value=0.0),
                                Intervention(tgt, "add", factor=alpha, stats=llama_stats)]):
        got = run(tiny_llama, tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # add α·μ == set to (a + α·μ), with a read from a clean run
    a = cache_site_activations(tiny_llama, tokens, tgt)
    hand = {l: a.values[l][..., idx] + alpha * mu[l, idx].float() for l, idx in tgt.by_layer().items()}
    values = {l: a.values[l].index_copy(-1, torch.tensor(idx), hand[l]) for l, idx in tgt.by_layer().items()}
    src_cache = SiteCache("act", values, a.tokens, a.model)
    with intervene(tiny_llama, tgt, "add", factor=alpha, stats=llama_stats):
        added = run(tiny_llama, tokens)
    with intervene(tiny_llama, tgt, "patch", source=src_cache):  # (a + αμ)·up vs a·up + αμ·up: rounding only
        torch.testing.assert_close(run(tiny_llama, tokens), added, atol=1e-4, rtol=1e-4)


def test_sites_combine_at_one_layer(tiny_llama, hf_llama, tokens):
    """pre and act interventions on the same layer (hook_pre, then hook_post with up), in one call."""
    hf2 = edited_llama(hf_llama, {0: lambda y: y.index_fill(-1, torch.tensor([5, 6]), -0.5)})
    hf2.model.layers[0].mlp.gate_proj.register_forward_hook(lambda m, a, o: o.index_fill(-1, torch.tensor([1]), 3.0))
    items = [Intervention({0: [1]}, "set", value=3.0, site="pre"), Intervention({0: [5, 6]}, "set", value=-0.5)]
    with intervene(tiny_llama, items):
        got = run(tiny_llama, tokens)
    torch.testing.assert_close(got, hf_run(hf2, tokens), atol=1e-5, rtol=0)
    hooks, _ = make_hooks(tiny_llama, items)  # the same hooks, for run_with_hooks
    with torch.no_grad():
        torch.testing.assert_close(tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks), got, atol=0, rtol=0)
    assert n_hooks(tiny_llama) == 0


@pytest.mark.parametrize("statistic", ["mean", "median", "max", "min", "q0.9", "q0.25"])
def test_set_to_a_statistic_writes_that_statistic(tiny_llama, tokens, llama_stats, statistic):
    expected = {"mean": lambda s: s.mean(), "q0.9": lambda s: s.quantile(0.9), "q0.25": lambda s: s.quantile(0.25)}.get(
        statistic, lambda s: s.sentence_stat(statistic))(llama_stats)[0]  # de
    names = [f"blocks.{l}.mlp.hook_post" for l in LLAMA_NEURONS] + [f"blocks.{l}.mlp.hook_pre_linear" for l in LLAMA_NEURONS]
    with intervene(tiny_llama, LLAMA_NEURONS, "set", stats=llama_stats, statistic=statistic, language="de", factor=3.0):
        _, seen = record_at(tiny_llama, names, lambda: run(tiny_llama, tokens))
    for l, idx in LLAMA_NEURONS.items():
        post, up = seen[f"blocks.{l}.mlp.hook_post"][0], seen[f"blocks.{l}.mlp.hook_pre_linear"][0]
        torch.testing.assert_close(post[..., idx], 3.0 * expected[l, idx].float() * up[..., idx], atol=1e-5, rtol=1e-5)


def test_set_on_a_non_gated_model_writes_the_value(tiny_gpt2, tokens):
    with intervene(tiny_gpt2, GPT2_NEURONS, "set", value=-0.25):
        _, seen = record_at(tiny_gpt2, ["blocks.1.mlp.hook_post"], lambda: run(tiny_gpt2, tokens))
    post = seen["blocks.1.mlp.hook_post"][0]
    assert torch.all(post[..., GPT2_NEURONS[1]] == -0.25)
    assert not torch.any(post[..., [1, 2, 3]] == -0.25)


# -- hooks: added and removed ------------------------------------------------------------------


def test_no_hook_survives_and_user_hooks_stay(tiny_llama, tokens):
    calls = []
    user = ("blocks.0.mlp.hook_post", lambda act, hook: calls.append(1))  # same point as the intervention
    with tiny_llama.hooks(fwd_hooks=[user]):
        before = n_hooks(tiny_llama)
        with pytest.raises(RuntimeError, match="boom"):
            with intervene(tiny_llama, LLAMA_NEURONS, "set", value=1.0, positions="prompt"):
                assert n_hooks(tiny_llama) > before
                run(tiny_llama, tokens)
                raise RuntimeError("boom")
        assert n_hooks(tiny_llama) == before
        # an error raised by a hook inside the forward pass (patch source too short)
        short = cache_site_activations(tiny_llama, tokens[:, :3], LLAMA_NEURONS)
        with pytest.raises(LangNeuronsError, match="holds 3 positions"):
            with intervene(tiny_llama, LLAMA_NEURONS, "patch", source=short):
                run(tiny_llama, tokens)
        assert n_hooks(tiny_llama) == before
        # invalid arguments: refused before any hook is added
        with pytest.raises(LangNeuronsError):
            with intervene(tiny_llama, {0: [10_000]}, "zero"):
                pass
        assert n_hooks(tiny_llama) == before
        with intervene(tiny_llama, LLAMA_NEURONS, "zero"):
            pass
        assert n_hooks(tiny_llama) == before
        calls.clear()
        run(tiny_llama, tokens)
        assert calls == [1]  # the user's hook still fires
    assert n_hooks(tiny_llama) == 0


def test_interventions_never_write_in_place(tiny_llama, tokens):
    """A hook that ran before (a cache holding a reference, say) keeps the clean activation."""
    _, clean = record_at(tiny_llama, ["blocks.0.mlp.hook_post"], lambda: run(tiny_llama, tokens))
    held = []
    with tiny_llama.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, hook: held.append(act))]):
        with intervene(tiny_llama, LLAMA_NEURONS, "scale", factor=3.0):
            run(tiny_llama, tokens)
    assert torch.equal(held[0], clean["blocks.0.mlp.hook_post"][0])


# -- positions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("positions,expected", [("all", range(7)), ("prompt", range(3)), ("generated", range(3, 7)),
                                                ("last", [6]), ([0, 4, 5, 99], [0, 4, 5])])
def test_positions_on_a_forward_pass(tiny_llama, tokens, positions, expected):
    """Layer 0's MLP output changes only at the named positions; logits before the first of them
    do not change at all."""
    idx = LLAMA_NEURONS[0]
    names = ["blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre_linear"]
    clean, seen0 = record_at(tiny_llama, names, lambda: run(tiny_llama, tokens))
    with intervene(tiny_llama, LLAMA_NEURONS, "set", value=4.0, positions=positions, prompt_length=3):
        got, seen = record_at(tiny_llama, names, lambda: run(tiny_llama, tokens))
    post, post0, up = seen[names[0]][0], seen0[names[0]][0], seen0[names[1]][0]
    touched = [p for p in range(7) if not torch.equal(post[:, p], post0[:, p])]
    assert touched == list(expected)
    for p in expected:
        torch.testing.assert_close(post[:, p, idx], 4.0 * up[:, p, idx])
    first = min(expected)
    torch.testing.assert_close(got[:, :first], clean[:, :first], atol=0, rtol=0)
    assert not torch.allclose(got[:, first:], clean[:, first:])


def _generate(model, prompt, cached=True, n=4):
    return model.generate(prompt, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False,
                          use_past_kv_cache=cached)


@pytest.mark.parametrize("positions", ["generated", "last", "prompt"])
def test_positions_during_generation(tiny_llama, tokens, positions):
    """KV-cached generation under an intervention equals one forward pass over the generated
    sequence with the same absolute positions named, activation by activation; and greedy
    generation without a KV cache gives the same tokens (except for "last", whose meaning differs
    without a cache, see the module docstring)."""
    prompt, P = tokens[:1, :5], 5
    layers = {l: list(range(0, 48, 3)) for l in range(3)}
    names = [f"blocks.{l}.mlp.hook_post" for l in range(3)]
    with intervene(tiny_llama, layers, "set", value=8.0, positions=positions) as h:
        out, seen = record_at(tiny_llama, names, lambda: _generate(tiny_llama, prompt))
        assert h.prompt_length == P and h.calls == 4 and h.total == P + 3
    assert out.shape == (1, P + 4)
    assert [a.shape[1] for a in seen[names[0]]] == [P, 1, 1, 1]  # the KV cache feeds one new position per step
    baseline = _generate(tiny_llama, prompt)
    assert not torch.equal(out, baseline)  # the intervention matters

    seq = out[:, :-1]  # the last token never went through the model
    oracle_pos = {"generated": "generated", "prompt": "prompt", "last": list(range(P - 1, P + 3))}[positions]
    with intervene(tiny_llama, layers, "set", value=8.0, positions=oracle_pos, prompt_length=P):
        logits, once = record_at(tiny_llama, names, lambda: run(tiny_llama, seq))
    assert torch.equal(logits[:, P - 1:].argmax(-1), out[:, P:])
    for n in names:
        torch.testing.assert_close(torch.cat(seen[n], dim=1), once[n][0], atol=1e-5, rtol=1e-5)
    if positions != "last":
        with intervene(tiny_llama, layers, "set", value=8.0, positions=positions) as h:
            assert torch.equal(_generate(tiny_llama, prompt, cached=False), out)
            assert h.prompt_length == P and h.total == P + 3 and h.offset == 0  # each step re-read from 0
        # two generations in one context: reset() between them
        with intervene(tiny_llama, layers, "set", value=8.0, positions=positions) as h:
            _generate(tiny_llama, prompt[:, :3])
            h.reset()
            assert torch.equal(_generate(tiny_llama, prompt), out)


def test_self_patch_during_generation_changes_nothing(tiny_llama, tokens):
    """Patching reads the source at absolute positions, also during KV-cached generation."""
    prompt = tokens[:1, :5]
    names = [f"blocks.{l}.mlp.hook_post" for l in range(3)]
    baseline, clean = record_at(tiny_llama, names, lambda: _generate(tiny_llama, prompt))
    cache = cache_site_activations(tiny_llama, baseline, LLAMA_NEURONS)
    shuffled = SiteCache("act", {l: v.flip(1) for l, v in cache.values.items()}, cache.tokens, cache.model)
    with intervene(tiny_llama, LLAMA_NEURONS, "patch", source=cache):
        out, seen = record_at(tiny_llama, names, lambda: _generate(tiny_llama, prompt))
    assert torch.equal(out, baseline)
    for n in names:
        torch.testing.assert_close(torch.cat(seen[n], 1), torch.cat(clean[n], 1), atol=1e-6, rtol=0)
    with intervene(tiny_llama, LLAMA_NEURONS, "patch", source=shuffled, positions="generated"):
        _, seen = record_at(tiny_llama, ["blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre_linear"],
                            lambda: _generate(tiny_llama, prompt))
    post, up = (torch.cat(seen[n], 1) for n in ("blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre_linear"))
    idx = LLAMA_NEURONS[0]
    torch.testing.assert_close(post[:, 5:, idx], shuffled.values[0][:, 5:8, idx] * up[:, 5:, idx])


def test_positions_on_a_non_gated_model(tiny_gpt2, tokens):
    clean, seen0 = record_at(tiny_gpt2, ["blocks.0.mlp.hook_post"], lambda: run(tiny_gpt2, tokens))
    with intervene(tiny_gpt2, GPT2_NEURONS, "set", value=2.0, positions="generated", prompt_length=4):
        got, seen = record_at(tiny_gpt2, ["blocks.0.mlp.hook_post"], lambda: run(tiny_gpt2, tokens))
    post, post0 = seen["blocks.0.mlp.hook_post"][0], seen0["blocks.0.mlp.hook_post"][0]
    assert torch.equal(post[:, :4], post0[:, :4]) and torch.all(post[:, 4:, GPT2_NEURONS[0]] == 2.0)
    assert torch.equal(got[:, :4], clean[:, :4])


# -- refusals -----------------------------------------------------------------------------------


def test_mismatched_site_and_model_are_refused(tiny_llama, llama_stats):
    L, I = tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp
    pre = LanguageNeurons({"de": [(0, 1)]}, "manual", {}, "pre", {}, L, I)
    with pytest.raises(LangNeuronsError, match="site 'act'.*site 'pre'"):
        intervene(tiny_llama, pre, "set", stats=llama_stats).__enter__()
    with pytest.raises(LangNeuronsError, match="site 'act'.*site 'pre'"):
        Intervention({0: [1]}, "add", stats=llama_stats, site="pre", language="de")
    other = LanguageNeurons({"de": [(0, 1)]}, "manual", {}, "act", {"name": "big-model", "weights_hash": "0" * 32}, L, I)
    mine = fingerprint(tiny_llama)["weights_hash"]
    with pytest.raises(LangNeuronsError, match=f"'big-model'.*'{'0' * 32}'.*'{mine}'"):
        with intervene(tiny_llama, other, "zero"):
            pass
    with pytest.raises(LangNeuronsError, match="different models"):
        Intervention(other, "add", stats=llama_stats)
    # a set without a recorded model is accepted
    anon = LanguageNeurons({"de": [(0, 1)]}, "manual", {}, "act", {}, L, I)
    with intervene(tiny_llama, anon, "add", stats=llama_stats):
        pass
    with pytest.raises(LangNeuronsError, match="2 layers × 3 neurons"):
        with intervene(tiny_llama, LanguageNeurons({"de": [(0, 1)]}, "manual", {}, "act", {}, 2, 3), "zero"):
            pass


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="explode"), "'explode'.*'zero', 'set', 'scale', 'add', 'patch'"),
    (dict(mode="scale", factor="2"), "factor must be a finite number, got '2'"),
    (dict(mode="scale", factor=float("nan")), "factor must be a finite number, got nan"),
    (dict(mode="scale", factor=True), "got True"),
    (dict(mode="scale"), "needs factor"),
    (dict(mode="zero", factor=2.0), "mode 'zero' takes no factor"),
    (dict(mode="set"), "exactly one of value"),
    (dict(mode="set", value=1.0, source="x"), "takes no source"),
    (dict(mode="patch"), "needs source"),
    (dict(mode="set", value=1.0, positions="middle"), "'middle'.*'all', 'prompt', 'generated', 'last'"),
    (dict(mode="set", value=1.0, positions=[-1]), "positions"),
    (dict(mode="add", stats="stats"), "stats"),
    (dict(mode="set", value=1.0, statistic="q1.5"), "'q1.5'.*'mean', 'median'"),
    (dict(mode="set", value=1.0, statistic="max"), "statistic='max' needs stats="),
    (dict(mode="set", value=1.0, site="mlp"), "'mlp'.*'act', 'pre', 'post'"),
])
def test_bad_arguments_name_the_value_and_the_choices(tiny_llama, kwargs, match):
    kwargs = dict(kwargs)
    with pytest.raises(LangNeuronsError, match=match):
        with intervene(tiny_llama, {0: [1]}, kwargs.pop("mode"), **kwargs):
            pass


def test_bad_neurons_and_languages(tiny_llama, llama_stats):
    L, I = tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp
    two = LanguageNeurons({"de": [(0, 1)], "fr": [(1, 2)]}, "manual", {}, "act", {}, L, I)
    with pytest.raises(LangNeuronsError, match="2 languages.*'de', 'fr'"):
        Intervention(two, "zero")
    assert Intervention(two, "zero", language="fr").layers == {1: (2,)}
    with pytest.raises(LangNeuronsError, match="'xx'.*'de', 'fr'"):
        Intervention({0: [1]}, "add", stats=llama_stats, language="xx")
    with pytest.raises(LangNeuronsError, match="name the language"):
        Intervention({0: [1]}, "add", stats=llama_stats)
    with pytest.raises(LangNeuronsError, match="index 48 of layer 0 out of range"):
        with intervene(tiny_llama, {0: [48]}, "zero"):
            pass
    with pytest.raises(LangNeuronsError, match="layer 7 out of range"):
        with intervene(tiny_llama, {7: [1]}, "zero"):
            pass
    with pytest.raises(LangNeuronsError, match="inside each Intervention"):
        intervene(tiny_llama, [Intervention({0: [1]}, "zero")], mode="zero").__enter__()


# -- residual steering ----------------------------------------------------------------------------


def test_diffmean_is_the_mean_difference_and_is_added(tiny_llama, tokenizer, tokens):
    texts = {k: SENTENCES[k][:3] for k in ("en", "de", "ru")}
    layer = 1
    name = f"blocks.{layer}.hook_resid_post"

    def resid(sentence):  # one unpadded sentence, BOS dropped
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(sentence, add_special_tokens=False).input_ids])
        _, seen = record_at(tiny_llama, [name], lambda: run(tiny_llama, ids))
        return seen[name][0][0, 1:].double()

    rows = {k: torch.cat([resid(s) for s in v]) for k, v in texts.items()}
    naive = rows["de"].mean(0) - torch.cat([rows["en"], rows["ru"]]).mean(0)
    dm = diffmean(tiny_llama, texts, "de", layer, beta=2.0, batch_size=2, progress=False)
    assert isinstance(dm, DiffMean) and dm.n_tokens["de"] == rows["de"].shape[0]
    torch.testing.assert_close(dm.direction.double(), naive, atol=1e-5, rtol=1e-5)
    balanced = diffmean(tiny_llama, texts, "de", layer, balanced=True, progress=False)
    torch.testing.assert_close(balanced.direction.double(),
                               rows["de"].mean(0) - (rows["en"].mean(0) + rows["ru"].mean(0)) / 2, atol=1e-5, rtol=1e-5)

    _, clean = record_at(tiny_llama, [name], lambda: run(tiny_llama, tokens))
    with intervene(tiny_llama, dm, positions="generated", prompt_length=4):
        _, got = record_at(tiny_llama, [name], lambda: run(tiny_llama, tokens))
    delta = got[name][0] - clean[name][0]
    assert torch.all(delta[:, :4] == 0)
    torch.testing.assert_close(delta[:, 4:], (2.0 * dm.direction).expand(2, 3, -1), atol=1e-5, rtol=1e-5)
    # neurons and steering share one API: both in one call
    with intervene(tiny_llama, [Intervention(LLAMA_NEURONS, "zero"), dm.with_beta(0.0)]):
        with intervene(tiny_llama, LLAMA_NEURONS, "zero"):
            pass
    with pytest.raises(LangNeuronsError, match="'xx'.*'en', 'de', 'ru'"):
        diffmean(tiny_llama, texts, "xx", layer)
    # several targets from one pass: each direction is exactly diffmean's for that target alone
    for bal in (False, True):
        many = diffmeans(tiny_llama, texts, ["ru", "de", "en"], layer, beta=2.0, batch_size=2, balanced=bal,
                         progress=False)
        for dm_k in many:
            alone = diffmean(tiny_llama, texts, dm_k.target, layer, beta=2.0, batch_size=2, balanced=bal,
                             progress=False)
            assert torch.equal(dm_k.direction, alone.direction) and dm_k.others == alone.others
            assert dm_k.n_tokens == alone.n_tokens and dm_k.beta == 2.0
