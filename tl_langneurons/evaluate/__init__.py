"""Measurements under interventions, each a tidy DataFrame (one row per measurement); methods page:
[evaluation](methods.md#evaluation).

* :mod:`.perplexity` — :func:`nll_per_language`; Tang et al.'s deactivation matrix
  (:func:`perplexity_matrix`, :func:`perplexity_summary`): switch off language *i*'s neurons,
  measure every language *j* on exactly the same tokens, with a random-neuron control;
* :mod:`.steering` — :func:`steer`, :func:`steer_sweep`, :func:`steer_with`,
  :func:`diffmean_sweep` + :func:`steer_summary`: generate under an intervention, identify the
  continuation's language offline (:mod:`.langid`), against no intervention and a random control,
  with Wilson intervals (:mod:`.intervals`) and the fluency of every generation (:mod:`.fluency`:
  NLL under the unsteered model, repeated n-grams, a "fluent target-language" rate);
* :mod:`.lss` — Language Steering Shift (Rahmanisa et al. 2025) on parallel facts;
* underneath: :mod:`.scoring` (token NLL, continuation log-probabilities), :mod:`.generation`
  (:class:`GenerationConfig`, the one place decoding defaults live; seeded generation; neutral
  prompts), :mod:`.conditions` (baseline / intervention / control).

Tokens (as :func:`~tl_langneurons.record` counts them): each sentence is one sequence with the
tokenizer's BOS prepended; the NLL predicts tokens 1..n from their prefix, so BOS is never a target,
and padding never counts. Baseline, intervention and control always see the same token batches.
"""

from .conditions import CONDITIONS, CONTROLS
from .fluency import FluencyCriterion, fluency_criterion, repetition
from .generation import DEFAULT_GENERATION, GenerationConfig, default_prompts, read_prompts
from .intervals import wilson
from .lss import load_facts, load_mlama, lss, lss_summary
from .perplexity import delta_matrix, nll_per_language, per_language, perplexity_matrix, perplexity_summary
from .scoring import continuation, sequence_logprobs, token_nll
from .steering import (DEFAULT_FACTOR, DEFAULT_MODE, DEFAULT_STATISTIC, diffmean_sweep,
                       random_direction_like, steer, steer_summary, steer_sweep, steer_with)

__all__ = ["CONDITIONS", "CONTROLS", "FluencyCriterion", "fluency_criterion", "repetition", "DEFAULT_FACTOR", "DEFAULT_GENERATION", "DEFAULT_MODE", "DEFAULT_STATISTIC",
           "GenerationConfig", "continuation", "default_prompts", "delta_matrix", "diffmean_sweep",
           "load_facts", "load_mlama", "lss", "lss_summary", "nll_per_language", "per_language", "perplexity_matrix",
           "perplexity_summary", "random_direction_like", "read_prompts", "sequence_logprobs", "steer",
           "steer_summary", "steer_sweep", "steer_with", "token_nll", "wilson"]
