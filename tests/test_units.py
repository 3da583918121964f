"""The unit registry: linear units (Kojima) against the Hugging Face modules they name, AP experts
over all of them against a naive per-unit scikit-learn ranking, SAE features against a hand
encoding, and a toy unit kind registered and run end to end."""

import json

import numpy as np
import pytest
import torch
from conftest import SENTENCES, _save, n_hooks

from tl_langneurons import Intervention, LangNeuronsError, intervene, record
from tl_langneurons.identify import ap_experts_all, lape
from tl_langneurons.tokens import encode
from tl_langneurons.units import (Part, Site, UnitKind, check_site, register_unit, resolve_site,
                                  unregister_unit)

TEXTS = {k: SENTENCES[k][:3] for k in ("en", "de", "ja")}
LINEAR = ("q", "k", "v", "o", "gate", "up", "down")


@pytest.fixture(scope="module")
def tiny_phi3_dir(tmp_path_factory, tokenizer):
    """Phi-3 (tests/archs.py): fused qkv_proj and gate_up_proj."""
    import archs

    return archs.save("phi3", tokenizer, tmp_path_factory.mktemp("phi3"))


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _modules(hf, layer: int) -> list[tuple]:
    """(module, column slice or None) per linear part, in the site's order, named as Hugging Face does."""
    if hasattr(hf, "transformer"):  # GPT-2: fused c_attn = [q | k | v]
        b, d = hf.transformer.h[layer], hf.config.n_embd
        return [(b.attn.c_attn, slice(0, d)), (b.attn.c_attn, slice(d, 2 * d)), (b.attn.c_attn, slice(2 * d, 3 * d)),
                (b.attn.c_proj, None), (b.mlp.c_fc, None), (b.mlp.c_proj, None)]
    b = hf.model.layers[layer]
    if hasattr(b.self_attn, "qkv_proj"):  # Phi-3: fused qkv_proj and gate_up_proj = [gate | up]
        c = hf.config
        dh = c.hidden_size // c.num_attention_heads
        q, kv = c.num_attention_heads * dh, c.num_key_value_heads * dh
        i = c.intermediate_size
        return [(b.self_attn.qkv_proj, slice(0, q)), (b.self_attn.qkv_proj, slice(q, q + kv)),
                (b.self_attn.qkv_proj, slice(q + kv, q + 2 * kv)), (b.self_attn.o_proj, None),
                (b.mlp.gate_up_proj, slice(0, i)), (b.mlp.gate_up_proj, slice(i, 2 * i)), (b.mlp.down_proj, None)]
    a, m = b.self_attn, b.mlp
    return [(a.q_proj, None), (a.k_proj, None), (a.v_proj, None), (a.o_proj, None), (m.gate_proj, None),
            (m.up_proj, None), (m.down_proj, None)]


def hf_linear_units(hf, ids: list[int]) -> torch.Tensor:
    """``[pos, layer, units]``: every linear output of one sequence, read by forward hooks on the
    Hugging Face modules, side by side in the order q k v o (gate) up down."""
    n_layers = hf.config.num_hidden_layers
    seen, handles = {}, []
    for l in range(n_layers):
        for mod, _ in _modules(hf, l):
            if mod not in seen:
                seen[mod] = None
                handles.append(mod.register_forward_hook(lambda m, i, o: seen.__setitem__(m, o[0].detach())))
    try:
        with torch.no_grad():
            hf(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    rows = [torch.cat([seen[m] if s is None else seen[m][:, s] for m, s in _modules(hf, l)], -1)
            for l in range(n_layers)]
    return torch.stack(rows, 1)


def oracle_stats(hf, tok, texts, bos: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-language sums over the counted tokens (never BOS) and per-sentence means (with BOS if asked)."""
    sums, means = [], []
    for lang, sents in texts.items():
        total = 0
        for s in sents:
            a = hf_linear_units(hf, encode(tok, s)).double()
            total = total + a[1:].sum(0)
            means.append((a if bos else a[1:]).float().mean(0))
        sums.append(total)
    return torch.stack(sums), torch.stack(means)


@pytest.mark.parametrize("fixture", ["builtin", "tiny_llama_dir", "tiny_gpt2_dir", "tiny_phi3_dir"])
def test_linear_units_equal_forward_hooks_on_the_hugging_face_modules(fixture, request, tokenizer):
    from tl_langneurons import load_model
    from tl_langneurons.sources import builtin_model_path

    if fixture == "builtin":
        model, hf = request.getfixturevalue("builtin_model"), _hf(builtin_model_path())
    else:
        path = request.getfixturevalue(fixture)
        model, hf = load_model(path, site="linear"), _hf(path)
    texts = {k: v[:1] for k, v in TEXTS.items()} if fixture == "builtin" else TEXTS
    stats = record(model, texts, site="linear", batch_size=2, sentence_means=True, progress=False)
    want_sum, want_means = oracle_stats(hf, tokenizer, texts, bos=False)
    # float32 outputs of up to ~100 (the built-in model's o and down), summed in another order
    assert torch.allclose(stats.sum, want_sum, rtol=1e-5, atol=1e-4)
    assert torch.allclose(stats.sentence_means, want_means, rtol=1e-4, atol=1e-5)
    names = [p["part"] for p in stats.meta["units"]["layout"]]
    assert names == [n for n in LINEAR if n != "gate" or "gpt2" not in fixture]
    if fixture == "builtin":
        return  # its single sites are checked on the tiny models
    # each single site is its columns of `linear`, recorded on its own
    for part in stats.meta["units"]["layout"]:
        if part["part"] == "gate":
            continue
        one = record(model, TEXTS, site=part["part"], batch_size=2, progress=False)
        cols = slice(part["offset"], part["offset"] + part["width"])
        assert torch.equal(one.sum, stats.sum[..., cols]) and torch.equal(one.count_pos, stats.count_pos[..., cols])


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir", "tiny_phi3_dir"])
def test_setting_linear_units_equals_editing_the_hugging_face_outputs(fixture, request, tokenizer):
    """Kojima's forcing (set to a value) at units of every part equals forward hooks on the
    Hugging Face modules that overwrite those output columns."""
    from tl_langneurons import load_model

    path = request.getfixturevalue(fixture)
    model, hf = load_model(path, site="linear"), _hf(path)
    site = resolve_site(model, "linear")
    units = {0: [p.offset + 1 for p in site.parts[0]], 1: [p.offset + p.width - 1 for p in site.parts[1]]}
    handles = []
    for l, idx in units.items():
        for (mod, cols), part in zip(_modules(hf, l), site.parts[l]):
            start = cols.start if cols is not None else 0
            j = [start + i - part.offset for i in idx if part.offset <= i < part.offset + part.width]

            def hook(m, i, o, j=j):
                o = o.clone()
                o[..., j] = 0.5
                return o
            handles.append(mod.register_forward_hook(hook))
    ids = torch.tensor([encode(tokenizer, SENTENCES["de"][0])])
    try:
        with torch.no_grad():
            want = hf(ids).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), intervene(model, units, "set", value=0.5, site="linear"):
        got = model(ids)
    with torch.no_grad():
        clean = model(ids)
    assert not torch.allclose(clean, want, atol=1e-3)  # the edit matters
    assert torch.allclose(got, want, atol=1e-5)


def _naive_experts(means: torch.Tensor, labels: list[int], k: int, n: int) -> list[tuple[int, int]]:
    from sklearn.metrics import average_precision_score

    S, L, I = means.shape
    x = means.reshape(S, L * I).double().numpy()
    y = np.array([lab == k for lab in labels])
    ap = np.array([average_precision_score(y, x[:, u]) for u in range(L * I)])
    order = np.argsort(-ap, kind="stable")
    flat = np.concatenate([order[: n // 2], order[len(order) - n // 2:]])
    return sorted(zip((flat // I).tolist(), (flat % I).tolist()))


@pytest.mark.parametrize("bos", [False, True])
def test_ap_experts_over_all_linear_units_equal_a_naive_sklearn_ranking(bos, tiny_llama, tiny_llama_dir, tokenizer):
    texts = {k: SENTENCES[k] for k in ("en", "de", "ja")}
    stats = record(tiny_llama, texts, site="linear", batch_size=1, sentence_means=True, bos_in_sentence_means=bos,
                   progress=False)
    assert stats.meta["options"]["bos_in_sentence_means"] is bos
    _, means = oracle_stats(_hf(tiny_llama_dir), tokenizer, texts, bos=bos)
    assert torch.allclose(stats.sentence_means, means, rtol=1e-4, atol=1e-6)
    labels = stats.sentence_language.tolist()
    got = ap_experts_all(stats, ["de"], n=40, n_positive=4, n_negative=8)
    assert sorted(got.neurons["de"]) == _naive_experts(stats.sentence_means, labels, 1, 40)


def test_bos_counts_only_in_sentence_means(tiny_llama):
    a = record(tiny_llama, TEXTS, site="q", sentence_means=True, progress=False)
    b = record(tiny_llama, TEXTS, site="q", sentence_means=True, bos_in_sentence_means=True, progress=False)
    assert torch.equal(a.sum, b.sum) and torch.equal(a.n_tokens, b.n_tokens)
    assert not torch.allclose(a.sentence_means, b.sentence_means)
    with pytest.raises(LangNeuronsError, match="needs sentence_means"):
        record(tiny_llama, TEXTS, site="q", bos_in_sentence_means=True, progress=False)


# -- SAE features ---------------------------------------------------------------------------


def write_sae(path, hook: str, d_in: int, d_sae: int, arch: str = "standard", seed: int = 0, npz: bool = False):
    """A random SAE in SAELens's folder format (or Gemma Scope's params.npz beside a minimal cfg.json)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae ** 0.5, "b_dec": torch.randn(d_in, generator=g) * 0.1}
    if arch == "jumprelu":
        t["threshold"] = torch.rand(d_sae, generator=g) * 0.3
    path.mkdir(parents=True, exist_ok=True)
    if npz:
        np.savez(path / "params.npz", **{k: v.numpy() for k, v in t.items()})
        cfg = {"hook_name": hook}
    else:
        save_file(t, str(path / "sae_weights.safetensors"))
        cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": True,
               "metadata": {"hook_name": hook}, **({"k": 8} if arch == "topk" else {})}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return t


def hand_encode(t: dict, x: torch.Tensor, arch: str) -> torch.Tensor:
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        return pre.clamp_min(0)
    if arch == "jumprelu":
        return torch.where(pre > t["threshold"], pre.clamp_min(0), torch.zeros(()))
    out = torch.zeros_like(pre)
    v, i = pre.topk(8, dim=-1)
    return out.scatter(-1, i, v.clamp_min(0))


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_sae_feature_statistics_equal_a_hand_encoding(arch, tiny_llama, tokenizer, tmp_path):
    hook = "blocks.1.hook_resid_post"
    t = write_sae(tmp_path / "sae", hook, 32, 64, arch)
    stats = record(tiny_llama, TEXTS, site=f"sae:{tmp_path / 'sae'}", batch_size=2, sentence_means=True,
                   progress=False)
    assert (stats.n_layers, stats.d_mlp) == (1, 64)
    assert stats.meta["units"]["saes"][0]["hook_name"] == hook
    sums, count = [], []
    for sents in TEXTS.values():
        s = c = 0
        for text in sents:
            seen = {}
            with torch.no_grad(), tiny_llama.hooks(fwd_hooks=[(hook, lambda a, hook: seen.__setitem__("x", a))]):
                tiny_llama(torch.tensor([encode(tokenizer, text)]), return_type=None)
            f = hand_encode(t, seen["x"][0, 1:], arch).double()  # BOS never counts
            s, c = s + f.sum(0), c + (f > 0).sum(0)
        sums.append(s)
        count.append(c)
    assert torch.allclose(stats.sum[:, 0], torch.stack(sums), rtol=1e-5, atol=1e-5)
    assert torch.equal(stats.count_pos[:, 0], torch.stack(count).double())


def test_sae_intervention_equals_the_hand_edited_reconstruction(tiny_llama, tokenizer, tmp_path):
    hook = "blocks.1.hook_resid_post"
    t = write_sae(tmp_path / "sae", hook, 32, 64, "jumprelu")
    site = f"sae:{tmp_path / 'sae'}"
    ids = torch.tensor([encode(tokenizer, SENTENCES["en"][1])])
    idx = [0, 5, 9, 33, 63]

    def by_hand(x, hook):
        f = hand_encode(t, x, "jumprelu")
        g = f.clone()
        g[..., idx] = 0.0
        return x + (g - f) @ t["W_dec"]

    with torch.no_grad():
        clean = tiny_llama(ids)
        want = tiny_llama.run_with_hooks(ids, fwd_hooks=[(hook, by_hand)])
        with intervene(tiny_llama, {0: idx}, "zero", site=site):
            got = tiny_llama(ids)
        with intervene(tiny_llama, {0: idx}, "scale", factor=1.0, site=site):
            same = tiny_llama(ids)
    assert not torch.allclose(clean, want, atol=1e-4)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(same, clean)  # no feature changed: the reconstruction error is kept, nothing changes
    before = n_hooks(tiny_llama)
    with pytest.raises(RuntimeError, match="boom"), intervene(tiny_llama, {0: idx}, "zero", site=site):
        raise RuntimeError("boom")
    assert n_hooks(tiny_llama) == before


def test_sae_sets_and_gemma_scope_files(tiny_llama, tmp_path):
    write_sae(tmp_path / "set" / "b", "blocks.2.hook_resid_post", 32, 16, seed=1)
    write_sae(tmp_path / "set" / "a", "blocks.0.hook_resid_post", 32, 16, seed=2)
    site = check_site(tiny_llama, f"sae:{tmp_path / 'set'}")
    assert site.hook_names == ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post")  # ordered by block
    write_sae(tmp_path / "npz", "blocks.0.hook_resid_post", 32, 16, "jumprelu", seed=2, npz=True)
    write_sae(tmp_path / "st", "blocks.0.hook_resid_post", 32, 16, "jumprelu", seed=2)
    a = record(tiny_llama, TEXTS, site=f"sae:{tmp_path / 'npz'}", progress=False)
    b = record(tiny_llama, TEXTS, site=f"sae:{tmp_path / 'st'}", progress=False)
    assert torch.equal(a.sum, b.sum) and a.sum.abs().sum() > 0
    write_sae(tmp_path / "wide", "blocks.0.hook_resid_post", 48, 16)
    with pytest.raises(LangNeuronsError, match="reads width 48"):
        check_site(tiny_llama, f"sae:{tmp_path / 'wide'}")
    with pytest.raises(LangNeuronsError, match="does not exist"):
        resolve_site(tiny_llama, "sae:/nonexistent")


def test_shipped_sae_loads_on_the_builtin_model(builtin_model):
    from tl_langneurons.units.sae import builtin_sae_path

    site = check_site(builtin_model, "sae:builtin")
    assert site.n_layers == int(builtin_model.cfg.n_layers) and site.kind == "sae"
    assert [s["path"] for s in site.info["saes"]] == [str(builtin_sae_path() / f"blocks.{l}.hook_resid_post")
                                                      for l in range(site.n_layers)]


# -- a toy unit kind, registered and run end to end --------------------------------------------


def _resid(model, arg):
    """The residual stream after each block, as units (width from the embedding matrix)."""
    n = int(model.cfg.n_layers)
    width = int(model.original_model.get_input_embeddings().weight.shape[1])
    parts = tuple((Part(f"blocks.{l}.hook_resid_post", width, 0, "resid"),) for l in range(n))
    return Site("resid", "resid", False, n, width, parts)


@pytest.fixture
def toy_kind():
    register_unit(UnitKind("resid", _resid, "the residual stream after each block"), replace=True)
    yield
    unregister_unit("resid")


def test_a_registered_toy_unit_kind_runs_record_identify_intervene(toy_kind, tiny_llama, tokenizer):
    stats = record(tiny_llama, TEXTS, site="resid", progress=False)
    assert stats.count_pos.shape == (3, 3, 32)
    neurons = lape(stats, top_rate=0.1, filter_rate=0.5, activation_bar_ratio=0.5)
    assert neurons.site == "resid" and len(neurons.union()) > 0
    layer, idx = next(iter(sorted(neurons.by_layer(neurons.languages[0]).items())))
    ids = torch.tensor([encode(tokenizer, SENTENCES["de"][2])])

    def by_hand(x, hook):
        x = x.clone()
        x[..., list(idx)] = 0.0
        return x

    with torch.no_grad():
        want = tiny_llama.run_with_hooks(ids, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", by_hand)])
        with intervene(tiny_llama, Intervention({layer: list(idx)}, "zero", site="resid")):
            got = tiny_llama(ids)
    assert torch.equal(got, want)
    with pytest.raises(LangNeuronsError, match="unknown site 'resid'"):
        unregister_unit("resid")
        resolve_site(tiny_llama, "resid")


@pytest.mark.real
def test_linear_units_on_gemma_equal_forward_hooks_on_the_hugging_face_modules(gemma, gemma_hf):
    texts = {"en": SENTENCES["en"][:2], "de": SENTENCES["de"][:2]}
    stats = record(gemma, texts, site="linear", batch_size=1, sentence_means=True, progress=False)
    want_sum, want_means = oracle_stats(gemma_hf, gemma.tokenizer, texts, bos=False)
    assert [p["part"] for p in stats.meta["units"]["layout"]] == list(LINEAR)
    assert torch.allclose(stats.sum, want_sum, rtol=1e-4, atol=1e-3)
    assert torch.allclose(stats.sentence_means, want_means, rtol=1e-4, atol=1e-4)


def test_top_examples_of_a_multi_part_site_are_its_parts(tiny_llama):
    """Top examples at `linear` are, column for column, those each single site records."""
    lin = record(tiny_llama, TEXTS, site="linear", top_examples=2, progress=False)
    layout = {p["part"]: p for p in lin.meta["units"]["layout"]}
    for name in ("q", "down"):
        one = record(tiny_llama, TEXTS, site=name, top_examples=2, progress=False)
        off, w = layout[name]["offset"], layout[name]["width"]
        units = lin.top_examples.units
        keep = (units[:, 1] >= off) & (units[:, 1] < off + w)
        assert torch.equal(units[keep][:, 1] - off, one.top_examples.units[:, 1])
        for field in ("value", "sentence", "position", "window"):
            assert torch.equal(getattr(lin.top_examples, field)[:, keep], getattr(one.top_examples, field)), field
