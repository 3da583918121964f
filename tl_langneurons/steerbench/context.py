"""What the steering methods are built from, computed once per benchmark run and shared: the
LAPE, AP and PLND neuron sets and the SAE features with their random controls, and the residual
directions per target and layer. Everything but LAPE is built lazily: a run without direction
methods never reads a residual, one without the SAE row never records its features."""

from typing import Any

from .. import _checks
from ..units import check_site_name
from ..errors import LangNeuronsError, choices
from ..identify import ap_experts_all, lape, plnd, random_like
from ..intervene import DiffMean, diffmeans
from .directions import as_steering, fit_direction, sentence_residuals

# Kojima et al. force 2,000 units of XGLM-564M (24 layers × 4,096 MLP neurons = 98,304): the AP
# set is scaled to the same share of a model's MLP neurons.
KOJIMA_SHARE = 2000 / 98304


# what a method may need that a run has only when it is given (BenchContext.has), as a refusal says it
GIVEN_NEEDS = {"plnd": "statistics recorded with PLND importance (record --plnd; record(..., plnd=True))",
               "sae": "the model's SAEs (--sae DIR; sae='sae:DIR')"}


def ap_size(n_layers: int, d_mlp: int) -> int:
    n = round(KOJIMA_SHARE * n_layers * d_mlp / 2) * 2
    return max(2, n)


class BenchContext:
    """Everything :mod:`.methods` builds arms from.

    Args:
        stats: :class:`~tl_langneurons.NeuronStats` at ``act`` with sentence means (AP and the
            median need them), recorded on ``texts``' split (``stats``): the neurons are found there.
        texts: ``{language: sentences}`` the residual directions are fit on (the same ``stats`` text).
        neurons: the LAPE set to steer with (default: :func:`~tl_langneurons.identify.lape` at
            ``top_rate``); ``ap``: the AP set (default: top/bottom :func:`ap_size` per language).
        layers: the blocks residual directions are tried after (default: a quarter and half-way).
        sae: the site of the SAE features to steer with (``"sae:DIR"``; None: no SAE row). Their
            statistics are recorded on ``texts`` when first needed and their LAPE set is taken at
            ``top_rate`` of all features (SAE-LAPE, Andrylie et al. 2025).
    """

    def __init__(self, model: Any, stats, texts: dict[str, list[str]], *, neurons=None, ap=None,
                 top_rate: float = 0.01, layers=None, seed: int = 0, max_sentences: int = 200,
                 sae: str | None = None, progress: bool = True):
        self.model, self.stats, self.texts, self.seed = model, stats, texts, int(seed)
        self.top_rate = top_rate
        self.sae = None if sae is None else check_site_name(sae if str(sae).startswith("sae:") else f"sae:{sae}")
        self.max_sentences, self.progress = max_sentences, progress
        L = int(model.cfg.n_layers)
        self.layers = (sorted({max(0, L // 4), max(0, L // 2)}) if layers is None
                       else [_checks.integer("layer", l, 0, L - 1) for l in layers])
        self.lape = neurons if neurons is not None else lape(stats, top_rate=top_rate)
        self.lape_random = random_like(self.lape, self.seed)
        self._ap, self._ap_random = ap, None
        self._plnd = self._plnd_random = None
        self._sae_stats = self._sae_features = self._sae_random = None
        self._diffmeans: dict[int, dict[str, DiffMean]] = {}
        self._residuals = None
        self._fitted: dict[tuple, DiffMean] = {}

    @property
    def ap(self):
        if self._ap is None:
            if self.stats.sentence_means is None:
                raise LangNeuronsError("ap-median needs statistics recorded with sentence means (--sentence-means)")
            self._ap = ap_experts_all(self.stats, n=ap_size(self.stats.n_layers, self.stats.d_mlp))
        return self._ap

    @property
    def ap_random(self):
        if self._ap_random is None:
            self._ap_random = random_like(self.ap, self.seed)
        return self._ap_random

    def has(self, need: str) -> bool:
        """Whether what a method ``needs`` is here: PLND importance in the statistics, an SAE site."""
        if need == "plnd":
            return self.stats.importance_sum is not None
        if need == "sae":
            return self.sae is not None
        return True

    @property
    def plnd(self):
        if self._plnd is None:
            if not self.has("plnd"):
                raise LangNeuronsError(f"PLND neurons need {GIVEN_NEEDS['plnd']}")
            self._plnd = plnd(self.stats)
            self._plnd_random = random_like(self._plnd, self.seed)
        return self._plnd

    @property
    def plnd_random(self):
        self.plnd  # builds both  # noqa: B018
        return self._plnd_random

    @property
    def sae_stats(self):
        if self._sae_stats is None:
            if self.sae is None:
                raise LangNeuronsError(f"SAE features need {GIVEN_NEEDS['sae']}")
            from ..record import record

            texts = {k: v[:self.max_sentences] for k, v in self.texts.items() if k in self.stats.languages}
            self._sae_stats = record(self.model, texts, site=self.sae, progress=self.progress)
        return self._sae_stats

    @property
    def sae_features(self):
        if self._sae_features is None:
            self._sae_features = lape(self.sae_stats, top_rate=self.top_rate)
            self._sae_random = random_like(self._sae_features, self.seed)
        return self._sae_features

    @property
    def sae_random(self):
        self.sae_features  # builds both  # noqa: B018
        return self._sae_random

    def check_targets(self, targets: list[str], sources: list[str]) -> None:
        """Every target and source must have text (directions) and statistics (neurons)."""
        for lang in [*targets, *sources]:
            if lang not in self.stats.languages:
                raise LangNeuronsError(f"language {lang!r} is not in the statistics; they hold: "
                                       f"{choices(self.stats.languages)}")

    def direction(self, kind: str, target: str, layer: int) -> DiffMean:
        if layer not in self._diffmeans:
            targets = [k for k in self.texts if k in self.stats.languages]
            ds = diffmeans(self.model, self.texts, targets, layer, max_sentences=self.max_sentences,
                           progress=self.progress)
            self._diffmeans[layer] = dict(zip(targets, ds))
        if target not in self._diffmeans[layer]:
            raise LangNeuronsError(f"no text of target {target!r} to fit a direction on; have {choices(self.texts)}")
        dm = self._diffmeans[layer][target]
        if kind == "diffmean":
            return dm
        key = (kind, target, layer)
        if key not in self._fitted:
            if self._residuals is None:
                self._residuals = sentence_residuals(self.model, self.texts, self.layers,
                                                     max_sentences=self.max_sentences, progress=self.progress)
            if layer not in self._residuals:
                self._residuals.update(sentence_residuals(self.model, self.texts, [layer],
                                                          max_sentences=self.max_sentences, progress=self.progress))
            self._fitted[key] = as_steering(dm, fit_direction(kind, self._residuals[layer], target))
        return self._fitted[key]
