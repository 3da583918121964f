"""Residual-stream steering directions other than the difference of means, fit on sentence-mean
residuals of the ``stats`` split (never on the benchmark's prompts), as CLaS-Bench compares them:

* ``probe`` — the weight vector of an L2-regularised logistic regression, target vs the other
  languages (torch L-BFGS on standardised features, mapped back to the residual's coordinates);
* ``pca`` — of the first 10 principal components of all languages' sentence means, the one whose
  projection best separates the target from the rest (largest Fisher ratio), signed towards the
  target (the first component alone is often not about the target at all);
* ``lda`` — Fisher's discriminant ``(Σ_w + λ·tr(Σ_w)/d·I)⁻¹ (μ_target − μ_others)``, shrinkage λ = 0.1.

Every direction is rescaled to the norm of the token-level difference of means at the same layer,
so that β means the same displacement for every direction method, and wrapped as a
:class:`~tl_langneurons.intervene.DiffMean` (added after block ``layer``, like diffmean).
"""

from dataclasses import replace
from typing import Any

import torch
from jaxtyping import Float64
from torch import Tensor
from tqdm.auto import tqdm

from .. import _checks
from ..errors import LangNeuronsError, choices
from ..intervene import DiffMean
from ..models import StopForward, forward_until
from ..tokens import max_length, prepare_batches, tokenizer_of

DIRECTION_KINDS = ("probe", "pca", "lda")


def sentence_residuals(model: Any, texts: dict[str, list[str]], layers: list[int], batch_size: int = 16,
                       max_sentences: int | None = None, progress: bool = True
                       ) -> dict[int, dict[str, Float64[Tensor, "sentence d_model"]]]:
    """Per layer and language: each sentence's mean ``hook_resid_post`` over its counted tokens
    (BOS and padding excluded, as the recorder counts), from one pass that stops at the last layer."""
    layers = sorted({_checks.integer("layer", l, 0, int(model.cfg.n_layers) - 1) for l in layers})
    langs = list(texts)
    prepared = prepare_batches(tokenizer_of(model), texts, batch_size, max_length(model), max_sentences)
    out: dict[int, dict[str, list]] = {l: {k: [] for k in langs} for l in layers}
    state: dict = {}

    def make(layer: int, last: bool):
        def hook(act: Tensor, hook: Any = None) -> None:
            mask = state["counted"].to(act.device, act.dtype)[..., None]
            n = mask.sum(1).clamp_min(1)
            # masked positions are zeroed by a gather-free where, so a NaN at a pad cannot leak
            means = torch.where(mask.bool(), act, torch.zeros((), dtype=act.dtype, device=act.device)).sum(1) / n
            out[layer][state["lang"]].append(means.double().cpu())
            if last:
                raise StopForward
        return hook

    hooks = [(f"blocks.{l}.hook_resid_post", make(l, i == len(layers) - 1)) for i, l in enumerate(layers)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for b in tqdm(prepared.batches, desc="residuals", disable=not progress, leave=False):
            state.update(lang=langs[b.language], counted=b.counted)
            forward_until(model, b.tokens.to(model.cfg.device), b.attention_mask)
    return {l: {k: torch.cat(v) for k, v in per.items() if v} for l, per in out.items()}


def _probe(x: Tensor, y: Tensor, l2: float = 1e-2) -> Tensor:
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    pos_weight = (y == 0).sum() / (y == 1).sum().clamp_min(1)  # balance the one target against the rest

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, pos_weight=pos_weight)
        loss = loss + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach() / sd  # the same linear function of the raw residual


def _pca(x: Tensor, y: Tensor, k: int = 10) -> Tensor:
    xc = x - x.mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    comps = vh[: min(k, vh.shape[0])]
    proj = xc @ comps.T
    t, o = proj[y == 1], proj[y == 0]
    fisher = (t.mean(0) - o.mean(0)) ** 2 / (t.var(0) + o.var(0)).clamp_min(1e-12)
    best = int(fisher.argmax())
    return comps[best] * torch.sign(t.mean(0)[best] - o.mean(0)[best])


def _lda(x: Tensor, y: Tensor, shrinkage: float = 0.1) -> Tensor:
    t, o = x[y == 1], x[y == 0]
    sw = torch.cov(t.T) * (len(t) - 1) + torch.cov(o.T) * (len(o) - 1)
    sw = sw / (len(x) - 2)
    d = x.shape[1]
    sw = (1 - shrinkage) * sw + shrinkage * torch.trace(sw) / d * torch.eye(d, dtype=x.dtype)
    return torch.linalg.solve(sw, t.mean(0) - o.mean(0))


_FIT = {"probe": _probe, "pca": _pca, "lda": _lda}


def fit_direction(kind: str, residuals: dict[str, Tensor], target: str) -> Float64[Tensor, " d_model"]:
    """The unit-norm ``kind`` direction separating ``target``'s sentence means from the other
    languages' in ``residuals`` (one layer's output of :func:`sentence_residuals`)."""
    if kind not in _FIT:
        raise LangNeuronsError(f"unknown direction kind {kind!r}; allowed: {choices(DIRECTION_KINDS)}")
    if target not in residuals or len(residuals) < 2:
        raise LangNeuronsError(f"a {kind} direction needs sentences of {target!r} and of another language; "
                               f"have {choices(residuals)}")
    x = torch.cat([residuals[target], *[v for k, v in residuals.items() if k != target]])
    y = torch.zeros(len(x), dtype=torch.float64)
    y[: len(residuals[target])] = 1
    w = _FIT[kind](x, y)
    return w / w.norm()


def as_steering(diffmean: DiffMean, direction: Tensor) -> DiffMean:
    """``direction`` rescaled to ``diffmean``'s norm, at its layer and strength."""
    d = direction.double() / direction.double().norm() * diffmean.direction.double().norm()
    return replace(diffmean, direction=d.to(diffmean.direction.dtype))
