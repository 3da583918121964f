"""The latent-language lens (Wendler et al. 2024, ACL): every layer's residual stream read through
the model's own final norm and unembedding, on translation, repetition and cloze prompts.

* :mod:`.items` — the shipped word set and the prompts, filtered to single-token answers;
* :mod:`.readout` — the per-layer distributions (the logit lens);
* :mod:`.run` — :func:`run_lens` over the items, optionally with a language's neurons switched off;
* :mod:`..outputs.lens` — ``lens.csv`` and the figure.
"""

from .items import TASKS, LensItem, build_items, word_languages
from .readout import layer_log_probs, lens_hooks, read_out, soft_cap
from .run import LensResult, run_lens

__all__ = ["TASKS", "LensItem", "LensResult", "build_items", "layer_log_probs", "lens_hooks", "read_out",
           "run_lens", "soft_cap", "word_languages"]
