"""The typed-tensor checks really run: conftest installs jaxtyping's import hook (with beartype)
before anything imports the package, so a public function handed a tensor of the wrong shape or
dtype fails at the call — in every module, for the whole test run."""

import pytest
import torch

import tl_langneurons.stats as stats_module
from tl_langneurons import NeuronStats
from tl_langneurons.identify import average_precision
from tl_langneurons.tokens import Batch


def _violation():
    from jaxtyping import TypeCheckError

    return TypeCheckError


def test_the_whole_package_is_instrumented():
    # jaxtyping's hook wraps each instrumented function in a type-checking wrapper
    assert hasattr(average_precision, "__wrapped__")
    assert hasattr(stats_module.NeuronStats.activation_probability, "__wrapped__")


def test_a_misshaped_tensor_is_refused_by_a_typed_function():
    scores = torch.randn(5, 7)
    with pytest.raises(_violation()):
        average_precision(scores, torch.ones(6, dtype=torch.bool))  # 7 samples vs 6 labels
    with pytest.raises(_violation()):
        average_precision(scores[0], torch.ones(7, dtype=torch.bool))  # [sample], not [unit, sample]


def test_float64_fields_refuse_float32_and_shapes_must_agree():
    K, L, I = 2, 3, 4
    ok = dict(n_tokens=torch.ones(K, dtype=torch.float64), count_pos=torch.zeros(K, L, I, dtype=torch.float64),
              sum=torch.zeros(K, L, I, dtype=torch.float64), sum_sq=torch.zeros(K, L, I, dtype=torch.float64))
    NeuronStats(["a", "b"], "act", **ok)
    with pytest.raises(_violation()):
        NeuronStats(["a", "b"], "act", **{**ok, "sum": torch.zeros(K, L, I)})  # float32 where float64 is promised
    with pytest.raises(_violation()):
        Batch(0, torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, 5, dtype=torch.int64),
              torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, dtype=torch.int64))  # counted: 4 positions, not 5
