"""The steering benchmark: language forcing × meaning × fluency, every steering method on one
footing (methods page, "Steering judged on meaning"; CLaS-Bench, Gurgurov et al. 2026).

* :mod:`.prompts` — sentence openings from the built-in parallel split, tuning and evaluation sets;
* :mod:`.methods` — the registry of steering methods (:func:`register_method`);
* :mod:`.directions` — probe, PCA and LDA directions of the residual stream;
* :mod:`.context` — the neuron sets and directions the methods are built from;
* :mod:`.run` — :func:`steer_bench`, resumable;
* :mod:`.summary` — scores and the :func:`leaderboard` with intervals.
"""

from .methods import METHODS, Arm, SteerMethod, register_method
from .prompts import INSTRUCTIONS, bench_prompts
from .run import BenchResult, steer_bench
from .summary import arm_score, leaderboard

__all__ = ["INSTRUCTIONS", "METHODS", "Arm", "BenchResult", "SteerMethod", "arm_score", "bench_prompts",
           "leaderboard", "register_method", "steer_bench"]
