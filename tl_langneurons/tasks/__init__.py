"""Downstream tasks under interventions, on EleutherAI's lm-evaluation-harness (``pip install -e ".[tasks]"``).

* :func:`evaluate_tasks` (:mod:`.runner`) — any lm-eval task (XCOPA, XWinograd, XNLI, XStoryCloze,
  Belebele, INCLUDE, XQuAD, …) and the package's own, without intervention, under each
  intervention and under its random control, on the same documents; a tidy table and lm-eval's
  per-sample log;
* :mod:`.registry` — the package's task definitions (:data:`TASKS_DIR`, for lm-eval's
  ``include_path``) and redirecting a task's data to local files;
* :mod:`.translation` — corpus-level BLEU, spBLEU and chrF++ (sacreBLEU) as lm-eval aggregations,
  and their sacreBLEU signatures (recorded in :attr:`TaskRun.signatures`); :mod:`.pairs` — the
  translation tasks' documents;
* :mod:`.lm` — the model as lm-eval's ``HFLM`` (bridge or HookedTransformer);
* :mod:`.naming` — which language a task measures.
"""

from .naming import source_language, task_language
from .registry import TASKS_DIR, builtin_tasks, task_manager
from .runner import TaskRun, evaluate_tasks, write_samples

__all__ = ["TASKS_DIR", "TaskRun", "builtin_tasks", "evaluate_tasks", "source_language",
           "task_language", "task_manager", "write_samples"]
