"""Non-contrastive baselines (Mondal et al. 2025, Rahmanisa et al. 2025) and random controls.
"""

import zlib

import numpy as np
import torch

from .. import _checks
from ..errors import LangNeuronsError
from ..neurons import LanguageNeurons
from ..stats import NeuronStats
from .entropy import smallest_indices

def threshold(stats: NeuronStats, top_m: int | None = None, min_probability: float | None = None,
              all_sentences: bool = False) -> LanguageNeurons:
    """Per-language neurons by activation alone, with no contrast between languages.

    Give exactly one of:

    * ``top_m``: each language's ``top_m`` neurons of highest activation probability ``p``
      (Mondal et al. 2025), ties to the lower flat index;
    * ``min_probability``: each language's neurons with ``p ≥ min_probability``;
    * ``all_sentences=True`` (Rahmanisa et al. 2025, "active in every sentence"): neurons whose
      **mean activation over the sentence's tokens is > 0 in every recorded sentence** of the
      language. This reads ``stats.sentence_means``; it is Rahmanisa's criterion applied to the
      per-sentence mean activation, not to per-token firing (a neuron can have a positive mean
      in a sentence without firing on every token, and vice versa for negative-going sites).
    """
    given = [name for name, v in (("top_m", top_m), ("min_probability", min_probability)) if v is not None]
    if _checks.boolean("all_sentences", all_sentences):
        given.append("all_sentences")
    if len(given) != 1:
        raise LangNeuronsError(f"give exactly one of top_m, min_probability, all_sentences=True; got {given or 'none'}")
    K, L, I = stats.count_pos.shape
    neurons: dict[str, list[tuple[int, int]]] = {}
    if all_sentences:
        if stats.sentence_means is None:
            raise LangNeuronsError("all_sentences=True needs per-sentence means; record with sentence_means=True")
        for k, lang in enumerate(stats.languages):
            rows = stats.sentence_means[stats.sentence_language == k]
            if rows.shape[0] == 0:
                raise LangNeuronsError(f"no sentences recorded for language {lang!r}")
            layer, index = torch.nonzero(rows.amin(0) > 0, as_tuple=True)
            neurons[lang] = list(zip(layer.tolist(), index.tolist()))
        params = {"all_sentences": True}
    else:
        p = stats.activation_probability().detach().cpu().double().numpy()
        if top_m is not None:
            top_m = _checks.integer("top_m", top_m, 1, L * I)
            flats = [smallest_indices(-p[k].reshape(-1), top_m) for k in range(K)]
            params = {"top_m": top_m}
        else:
            min_probability = _checks.rate("min_probability", min_probability)
            flats = [np.flatnonzero(p[k].reshape(-1) >= min_probability) for k in range(K)]
            params = {"min_probability": min_probability}
        for lang, flat in zip(stats.languages, flats):
            neurons[lang] = list(zip((flat // I).tolist(), (flat % I).tolist()))
    return LanguageNeurons(neurons, "threshold", params, stats.site, stats.model, L, I)


def random_like(neurons: LanguageNeurons, seed: int = 0) -> LanguageNeurons:
    """A random control: per language, as many neurons in each layer as ``neurons`` has there,
    drawn uniformly without replacement within the layer.

    Each language draws from its own generator seeded by ``(seed, language)``, so a language's
    control does not depend on which other languages are in the set.
    """
    seed = _checks.integer("seed", seed, 0)
    out = {}
    for lang in neurons.languages:
        rng = np.random.default_rng([seed, zlib.crc32(lang.encode("utf-8"))])
        pairs = []
        for layer, indices in sorted(neurons.by_layer(lang).items()):
            pick = rng.choice(neurons.d_mlp, size=len(indices), replace=False)
            pairs.extend((layer, j) for j in pick.tolist())
        out[lang] = pairs
    params = {"seed": seed, "source_method": neurons.method, "source_params": neurons.params}
    return LanguageNeurons(out, "random_like", params, neurons.site, neurons.model, neurons.n_layers, neurons.d_mlp)


# -- benchmark -------------------------------------------------------------------------------
