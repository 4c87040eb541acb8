"""The research harness: the experiments behind ``bench/results/`` and the two demos, apart
from the library (no module of the library imports it; ``attprune demo`` and ``attprune
fetch`` call into it).

* data: ``pack`` (the offline task pack: ``corpora``, ``fetch``), ``multitask`` (the
  multi-task MiniLM), ``prompts`` (the pack's tasks as prompts to an instruct LLM);
* the one pipeline: ``pipeline`` (score with a cache, per attribution draw; plan; compact;
  evaluate with a cache), its subjects ``encoder`` (MiniLM tasks) and ``llm`` (prompt tasks
  on a causal LM), ``answers`` (our KV-cache answer scorer and perplexity) and ``lm_eval``
  (the same tasks in lm-evaluation-harness);
* statistics and presentation: ``stats`` (bootstrap intervals, paired contrasts over draws
  and tasks), ``report`` (tables, plots);
* experiments: ``encoder_benchmark`` (the MiniLM sweeps), ``llm_benchmark`` (SmolLM2 prompt
  tasks), ``adapting`` (adapting by pruning), ``summary`` (targets from the results), ``demo``
  and ``demo_llm``.  ``bench/experiments/*.py`` are thin command lines over these.
"""

from ..cache import cache_dir
from .fetch import fetch_corpora
from .pack import TASKS, UNSEEN, TaskData, TaskSpec, load_task, load_unseen

__all__ = ["TASKS", "UNSEEN", "TaskData", "TaskSpec", "cache_dir", "fetch_corpora", "load_task", "load_unseen"]
