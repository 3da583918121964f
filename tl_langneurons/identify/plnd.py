"""PLND, Parallel Language-specific Neuron Detection (Zhao et al., NeurIPS 2024, "How do Large
Language Models Handle Multilingualism?"), selected from recorded statistics.

A neuron is *activated* by a document when its importance there (the norm of its layer output's
change when it is switched off, :mod:`~tl_langneurons.importance`) is among the top
``plnd_top_rate`` of its layer (a recording choice). Zhao et al. call a neuron language-specific
when it is activated *consistently* — by every document of the language's corpus — and not by the
other languages' corpora. Here, with ``share[k, l, j]`` the fraction of language ``k``'s documents
that activate the neuron:

* ``activated[k] = share[k] ≥ consistency`` (default 1.0: every document, as in the paper and in
  the released code's intersection over documents);
* ``exclude="any"`` (default; the paper's text): language ``k`` keeps its activated neurons that no
  other language activates; ``exclude="all"`` (the released deactivation script): it drops only
  the neurons every language activates;
* ``top_n`` (ours, for comparisons at equal size): instead of the two rules above, each language's
  ``top_n`` neurons by ``share[k] − max_{k'≠k} share[k']``, ties broken by the larger
  ``mean importance[k] − max_{k'≠k} mean importance[k']`` and then the lower flat index.

``docs/plnd.md`` states every choice and where the released code departs from the paper.
"""

import numpy as np
import torch

from .. import _checks
from ..importance import activation_share, mean_importance
from ..neurons import LanguageNeurons
from ..stats import NeuronStats

EXCLUDE = ("any", "all")


def plnd_scores(stats: NeuronStats) -> tuple[torch.Tensor, torch.Tensor]:
    """``(share contrast, importance contrast)``, each ``[lang, layer, d_mlp]``: a language's value
    minus the largest of the other languages' (its own value where there is one language)."""
    share, imp = activation_share(stats), mean_importance(stats)

    def contrast(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return x.clone()
        out = torch.empty_like(x)
        for k in range(x.shape[0]):
            others = torch.cat([x[:k], x[k + 1:]])
            out[k] = x[k] - others.max(0).values
        return out

    return contrast(share), contrast(imp)


def plnd(stats: NeuronStats, consistency: float = 1.0, exclude: str = "any", top_n: int | None = None
         ) -> LanguageNeurons:
    """Language-specific neurons by PLND (module docstring). Needs ``record(..., plnd=True)``."""
    consistency = _checks.rate("consistency", consistency)
    exclude = _checks.one_of("exclude", exclude, EXCLUDE)
    K, L, I = stats.count_pos.shape
    top_rate = (stats.meta.get("options") or {}).get("plnd_top_rate")
    neurons: dict[str, list[tuple[int, int]]] = {}
    if top_n is not None:
        top_n = _checks.integer("top_n", top_n, 1, L * I)
        share_c, imp_c = plnd_scores(stats)
        for k, lang in enumerate(stats.languages):
            # lexicographic: share contrast, then importance contrast, then the lower flat index
            s = share_c[k].reshape(-1).double().numpy()
            m = imp_c[k].reshape(-1).double().numpy()
            order = np.lexsort((np.arange(L * I), -m, -s))[:top_n]
            neurons[lang] = [(int(f // I), int(f % I)) for f in order]
        params = {"top_n": top_n, "plnd_top_rate": top_rate}
    else:
        activated = activation_share(stats) >= consistency - 1e-12  # [K, L, I]
        for k, lang in enumerate(stats.languages):
            others = torch.cat([activated[:k], activated[k + 1:]])
            if exclude == "any":
                drop = others.any(0) if len(others) else torch.zeros(L, I, dtype=torch.bool)
            else:
                drop = activated.all(0)
            layer, index = torch.nonzero(activated[k] & ~drop, as_tuple=True)
            neurons[lang] = list(zip(layer.tolist(), index.tolist()))
        params = {"consistency": consistency, "exclude": exclude, "plnd_top_rate": top_rate}
    return LanguageNeurons(neurons, "plnd", params, stats.site, stats.model, L, I)
