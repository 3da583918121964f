"""Neuron-restricted fine-tuning (Mondal et al. 2025; Gurgurov et al. 2025) and its controls.

* :mod:`.masks` — :class:`NeuronMask` (a language's neurons, or a union) and :func:`random_mask`
  (the same count per layer, random);
* :mod:`.methods` — :class:`FinetuneConfig` and the trainable parameters of ``masked-lora``,
  ``selected-rows``, ``attention-only`` and ``full-lora``;
* :mod:`.data` — training examples from text or an lm-eval task's training split;
* :mod:`.train` — :func:`finetune`, the seeded training loop with its loss curve;
* :mod:`.adapter` — :class:`Adapter` (safetensors + JSON, and peft's format), merged or unmerged;
* :mod:`.transfer` — train on a source language, score every language with :mod:`..tasks`.
"""

from .adapter import Adapter, apply_adapter, load_finetuned, merged_folder
from .data import Example, pair_example, task_examples, text_examples
from .masks import NeuronMask, neuron_mask, random_mask
from .methods import METHODS, FinetuneConfig
from .train import finetune

__all__ = ["METHODS", "Adapter", "Example", "FinetuneConfig", "NeuronMask", "apply_adapter", "finetune",
           "load_finetuned", "merged_folder", "neuron_mask", "pair_example", "random_mask", "task_examples",
           "text_examples"]
