"""Identify language-specific neurons from recorded statistics: pure tensor functions, no model.

* :func:`lape` — language activation probability entropy (Tang et al. 2024, ACL);
* :func:`ap_experts` — expert units by average precision (Kojima et al. 2024, NAACL);
* :func:`threshold` — non-contrastive activation-probability baselines (Mondal et al. 2025,
  Rahmanisa et al. 2025);
* :func:`plnd` — parallel language-specific neuron detection by importance (Zhao et al. 2024, NeurIPS);
* :func:`random_like` — random controls with the same per-layer counts;
* :mod:`.methods` — the registry of methods by name (the command line's ``identify`` runs them).
"""

from .ap import AP_CHUNK_ELEMENTS, ap_experts, ap_experts_all, ap_scores, average_precision
from .entropy import LapeEntropy, lape, lape_entropy, smallest_indices
from .baselines import random_like, threshold
from .methods import METHODS, Method, Option, get_method, method_of, register_method, unregister_method
from .plnd import plnd, plnd_scores

__all__ = ["AP_CHUNK_ELEMENTS", "LapeEntropy", "METHODS", "Method", "Option", "ap_experts", "ap_experts_all",
           "ap_scores", "average_precision", "get_method", "lape", "lape_entropy", "method_of", "plnd", "plnd_scores",
           "random_like", "register_method", "smallest_indices", "threshold", "unregister_method"]
