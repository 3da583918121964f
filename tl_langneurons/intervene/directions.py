"""Read from the model what interventions write: site activations to patch with
(:func:`cache_site_activations`) and residual difference-of-means directions (:func:`diffmean`)."""

from typing import Any

import torch
from jaxtyping import Float64
from torch import Tensor

from .. import _checks
from ..corpus import Corpus
from ..errors import LangNeuronsError, choices
from ..identity import identity
from ..models import StopForward, forward_until
from ..neurons import LanguageNeurons
from ..progress import track
from ..tokens import max_length, prepare_batches, tokenizer_of
from ..units import resolve_site
from .specs import DiffMean, Intervention, SiteCache, layers_of_dict

def _to_tokens(model: Any, tokens) -> Tensor:
    if isinstance(tokens, (str, list)) and (isinstance(tokens, str) or all(isinstance(t, str) for t in tokens)):
        return model.to_tokens(tokens)
    if isinstance(tokens, Tensor) and not tokens.is_floating_point() and tokens.ndim in (1, 2):
        return (tokens[None] if tokens.ndim == 1 else tokens).to(model.cfg.device)
    raise LangNeuronsError("tokens must be a string, a list of strings or a [batch, pos] integer tensor, "
                           f"got {type(tokens).__name__}")


def cache_site_activations(model: Any, tokens, neurons=None, *, site: str | None = None,
                           attention_mask: Tensor | None = None) -> SiteCache:
    """Run ``tokens`` through ``model`` and keep the activations at a neuron site, for patching.

    Args:
        tokens: ``[batch, pos]`` token ids, or text (tokenized by ``model.to_tokens``, BOS prepended).
        neurons: what will be patched — a :class:`LanguageNeurons`, a ``{layer: [indices]}`` dict
            or an :class:`Intervention`; its site is used and only its layers are kept. ``None``
            keeps every layer.
        site: the site when ``neurons`` does not name one (dict or ``None``); default ``act``.

    Hooks already on the model (an enclosing :func:`intervene`, say) act during this run too.
    """
    if isinstance(neurons, Intervention):
        site_name, layers = neurons.site, sorted(neurons.layers)
    elif isinstance(neurons, LanguageNeurons):
        if site is not None and site != neurons.site:
            raise LangNeuronsError(f"site {site!r} differs from the neuron set's site {neurons.site!r}")
        site_name, layers = neurons.site, sorted({l for l, _ in neurons.union()})
    elif isinstance(neurons, dict):
        site_name, layers = site or "act", sorted(layers_of_dict(neurons))
    elif neurons is None:
        site_name, layers = site or "act", None
    else:
        raise LangNeuronsError("neurons must be a LanguageNeurons, a {layer: [indices]} dict or None, "
                               f"got {type(neurons).__name__}")
    resolved = resolve_site(model, site_name)
    layers = list(range(resolved.n_layers)) if layers is None else layers
    bad = [l for l in layers if l >= resolved.n_layers]
    if bad:
        raise LangNeuronsError(f"layer {bad[0]} out of range [0, {resolved.n_layers})")
    toks = _to_tokens(model, tokens)
    read: dict[tuple[int, int], Tensor] = {}
    n_parts = sum(len(resolved.parts[l]) for l in layers)

    def make(layer: int, i: int):
        part = resolved.parts[layer][i]

        def hook(act: Tensor, hook: Any = None) -> None:
            read[layer, i] = part.read(act).detach().clone()
            if len(read) == n_parts:  # the last of the hooks needed: nothing after it is computed
                raise StopForward
        return hook

    hooks = [(p.hook, make(l, i)) for l in layers for i, p in enumerate(resolved.parts[l])]
    if hooks:
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            forward_until(model, toks, attention_mask)
    values = {l: read[l, 0] if len(resolved.parts[l]) == 1 else
              torch.cat([read[l, i] for i in range(len(resolved.parts[l]))], -1) for l in layers}
    return SiteCache(site_name, values, toks.detach().cpu().long(), identity(model))




def diffmean(model: Any, corpus: Corpus | dict, target: str, layer, beta=1.0, *,
             languages: list[str] | None = None, balanced: bool = False, batch_size: int = 16,
             max_sentences: int | None = None, positions=None, progress: bool = True) -> DiffMean:
    """Difference-of-means steering direction at ``blocks.{layer}.hook_resid_post``.

    ``mean(resid | target-language tokens) − mean(resid | other languages' tokens)``, each sentence
    its own sequence with BOS prepended, BOS and padding excluded (as in :func:`record`).

    Args:
        corpus: a :class:`Corpus` or ``{language: [sentences]}``.
        target: the language to steer towards.
        layer: the block after which the direction is added.
        beta: strength; the intervention adds ``beta · direction``.
        languages: the other languages (default: all in the corpus but the target).
        balanced: average the other languages' means with equal weight instead of pooling their
            tokens (which lets the largest language dominate).
        positions: default positions of the returned steering (``None`` = as the context says).
    """
    return diffmeans(model, corpus, [target], layer, beta, languages=languages, balanced=balanced,
                     batch_size=batch_size, max_sentences=max_sentences, positions=positions, progress=progress)[0]


def diffmeans(model: Any, corpus: Corpus | dict, targets: list[str], layer, beta=1.0, *,
              languages: list[str] | None = None, balanced: bool = False, batch_size: int = 16,
              max_sentences: int | None = None, positions=None, progress: bool = True) -> list[DiffMean]:
    """:func:`diffmean` for several targets from one pass over the corpus (each language's
    residual sum is read once; every target's direction is then the same arithmetic on them, so
    each equals what :func:`diffmean` gives for that target alone)."""
    texts = _checks.texts_of(corpus)
    targets = list(targets)
    for target in targets:
        if target not in texts:
            raise LangNeuronsError(f"target language {target!r} is not in the corpus; available: {choices(texts)}")
    pool = list(languages) if languages is not None else list(texts)
    missing = [k for k in pool if k not in texts]
    if missing:
        raise LangNeuronsError(f"language {missing[0]!r} is not in the corpus; available: {choices(texts)}")
    others = {t: [k for k in pool if k != t] for t in targets}
    if any(not o for o in others.values()):
        raise LangNeuronsError("diffmean needs at least one language besides the target")
    n_layers = int(model.cfg.n_layers)
    layer = _checks.integer("layer", layer, 0, n_layers - 1)
    batch_size = _checks.positive_int("batch_size", batch_size)
    max_sentences = _checks.positive_int("max_sentences", max_sentences, allow_none=True)
    beta = _checks.number("beta", beta)
    langs = list(dict.fromkeys([*targets, *pool]))
    sums, counts = _resid_sums(model, {k: texts[k] for k in langs}, int(layer), batch_size, max_sentences,
                               progress, "diffmean " + ",".join(targets))
    empty = [k for k, n in zip(langs, counts.tolist()) if n == 0]
    if empty:
        raise LangNeuronsError(f"no tokens for language(s) {empty}")
    at = {k: i for i, k in enumerate(langs)}
    meta = identity(model)
    out = []
    for t in targets:
        o = [at[k] for k in others[t]]
        mean_t = sums[at[t]] / counts[at[t]]
        other = (sums[o] / counts[o, None]).mean(0) if balanced else sums[o].sum(0) / counts[o].sum()
        n_tokens = {k: int(counts[at[k]]) for k in [t, *others[t]]}
        out.append(DiffMean((mean_t - other).to(torch.float32), int(layer), beta, t, tuple(others[t]), n_tokens,
                            meta, positions))
    return out


def _resid_sums(model: Any, texts: dict, layer: int, batch_size: int, max_sentences: int | None, progress: bool,
                desc: str) -> tuple[Float64[Tensor, "lang d_model"], Float64[Tensor, " lang"]]:
    """Per language (in ``texts``' order): the float64 sum of ``hook_resid_post`` of block ``layer``
    over its counted tokens, and their number; the forward pass stops at that hook."""
    batches = prepare_batches(tokenizer_of(model), texts, batch_size, max_length(model), max_sentences).batches
    device = model.cfg.device
    sums = torch.zeros(len(texts), int(model.cfg.d_model), dtype=torch.float64, device=device)
    counts = torch.zeros(len(texts), dtype=torch.float64)
    state: dict = {}

    def hook(act: Tensor, hook: Any = None) -> None:
        # the counted rows only (a gather, not a multiplication by 0: a NaN at a padded position
        # must not reach the sum)
        rows = act.reshape(-1, act.shape[-1])[state["rows"].to(act.device)]
        sums[state["k"]] += rows.float().sum(0).to(sums.device, torch.float64)
        raise StopForward

    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)]):
        for b in track(batches, desc, progress, "batch"):
            state.update(k=b.language, rows=b.counted.reshape(-1).nonzero().squeeze(1))
            counts[b.language] += float(b.counted.sum())
            forward_until(model, b.tokens.to(device), b.attention_mask)
    return sums.cpu(), counts
