"""Numbers that must not be silently wrong: masking that survives inf/NaN at padded positions,
positions that mean the same in every row or are refused, and a weights hash that sees every
element and follows in-place edits."""

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import SENTENCES, n_hooks

from tl_langneurons import Intervention, LangNeuronsError, record
from tl_langneurons import evaluate as ev
from tl_langneurons.evaluate.scoring import masked_sum, nll_sums
from tl_langneurons.models import fingerprint, weights_hash
from tl_langneurons.tokens import prepare_batches


def test_masked_sum_ignores_inf_and_nan_where_masked():
    v = torch.tensor([[1.0, float("nan")], [2.0, float("inf")]])
    m = torch.tensor([[True, False], [True, False]])
    assert float(masked_sum(v, m)) == 3.0
    assert torch.isnan((v.double() * m).sum())  # what multiplying by the mask gave


class _NaNAtPadding:
    """A stand-in model whose logits are finite on real tokens and NaN on padded ones — what a
    fully masked row gives in half precision."""

    def __init__(self, vocab: int):
        self.cfg = SimpleNamespace(device="cpu", d_vocab=vocab)
        self.vocab = vocab

    def __call__(self, tokens, attention_mask=None, return_type="logits"):
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(tokens.shape[0], tokens.shape[1], self.vocab, generator=g)
        logits[attention_mask == 0] = float("nan")
        return logits


def test_nll_sums_survive_nan_logits_at_padded_positions(tokenizer):
    texts = {"en": SENTENCES["en"], "de": SENTENCES["de"]}
    batches = prepare_batches(tokenizer, texts, batch_size=4, max_len=256).batches
    assert any((b.attention_mask == 0).any() for b in batches)  # there is padding to mask
    sums, counts = nll_sums(_NaNAtPadding(len(tokenizer)), batches, 2, [], progress=False)
    assert torch.isfinite(sums).all() and (counts > 0).all()


def test_recorder_sums_survive_nan_at_padded_positions(tiny_llama):
    """NaN written into the last layer's activations at padded positions (before the recorder's
    own hook reads them) reaches none of the sums: they equal an unpadded recording's."""
    last = int(tiny_llama.cfg.n_layers) - 1
    state = {}

    def remember(tokens, hook):  # which batch is this? (the site check's 2-token run is none)
        state["mask"] = state["masks"].get((tuple(tokens.shape), tuple(tokens.flatten().tolist())))

    def poison(act, hook):
        if state["mask"] is None:
            return None
        act = act.clone()
        act[state["mask"] == 0] = float("nan")
        return act

    texts = {k: v for k, v in SENTENCES.items()}
    batches = prepare_batches(tiny_llama.tokenizer, texts, 4, 256).batches
    state["masks"] = {(tuple(b.tokens.shape), tuple(b.tokens.flatten().tolist())): b.attention_mask for b in batches}
    with tiny_llama.hooks(fwd_hooks=[("hook_embed", remember), (f"blocks.{last}.mlp.hook_pre", poison)]):
        padded = record(tiny_llama, texts, batch_size=4, progress=False)
    assert n_hooks(tiny_llama) == 0
    single = record(tiny_llama, texts, batch_size=1, progress=False)
    for name in ("count_pos", "sum", "sum_sq"):
        got, want = getattr(padded, name)[:, last], getattr(single, name)[:, last]
        assert torch.isfinite(got).all(), name
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), name


@pytest.mark.parametrize("positions", ["last", "prompt", "generated"])
def test_nll_per_language_refuses_positions_that_differ_per_row(tiny_llama, positions):
    zero = Intervention({0: [0]}, "zero")
    with pytest.raises(LangNeuronsError, match=f"positions={positions!r} is not the same position in every row"):
        ev.nll_per_language(tiny_llama, SENTENCES, interventions=zero, positions=positions, progress=False)
    # explicit absolute positions mean the same in every row of a right-padded batch: allowed
    df = ev.nll_per_language(tiny_llama, SENTENCES, interventions=zero, positions=[1, 2], progress=False)
    assert len(df) == len(SENTENCES)


def test_weights_hash_sees_one_changed_element_and_follows_in_place_edits(builtin_model):
    model = copy.deepcopy(builtin_model)  # tensors large enough that a strided sample skips elements
    before = weights_hash(model)
    assert weights_hash(model) == before == weights_hash(builtin_model)  # cached, and equal for equal weights
    name, p = next((n, p) for n, p in model.named_parameters() if "down_proj" in n or n.endswith("mlp.W_out"))
    with torch.no_grad():
        p.view(-1)[p.numel() // 2 + 1] += 1.0  # one element, off any stride a sampled hash would read
    after = weights_hash(model)
    assert after != before, name  # the cache followed the in-place edit, and one element was enough
    assert fingerprint(model)["weights_hash"] == after
    model.blocks[0].mlp.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    assert weights_hash(model) not in (before, after)  # a new parameter counts too
