"""Interventions on neurons (and on the residual stream), as hooks inside one context manager.

* :mod:`.modes` — the registry of modes: how each rewrites an activation, which arguments it takes;
* :mod:`.specs` — what to do: :class:`Intervention` (zero / set / scale / add / patch at a site),
  :class:`DiffMean` (residual steering), :class:`SiteCache` (the source of a patch);
* :mod:`.directions` — what is read from the model for them: :func:`cache_site_activations`,
  :func:`diffmean` / :func:`diffmeans`;
* :mod:`.hooks` — :func:`intervene`, the one context manager, and :func:`make_hooks` behind it.
"""

from .directions import cache_site_activations, diffmean, diffmeans
from .hooks import InterventionHandle, intervene, make_hooks
from .modes import MODES, Mode, get_mode, mode_names, register_mode, unregister_mode
from .specs import (POSITIONS, STATISTICS, DiffMean, Intervention, SiteCache, as_items, check_positions,
                    check_statistic, layers_of_dict, stats_values)

__all__ = ["MODES", "Mode", "POSITIONS", "STATISTICS", "DiffMean", "Intervention", "InterventionHandle", "SiteCache", "as_items",
           "cache_site_activations", "check_positions", "check_statistic", "diffmean", "diffmeans", "intervene",
           "get_mode", "layers_of_dict", "make_hooks", "mode_names", "register_mode", "stats_values",
           "unregister_mode"]
