"""The offline task pack, the multi-task model, and the experiments that prune it per task."""

from ..cache import cache_dir
from .fetch import fetch_corpora
from .pack import TASKS, UNSEEN, TaskData, TaskSpec, load_task, load_unseen

__all__ = ["TASKS", "UNSEEN", "TaskData", "TaskSpec", "cache_dir", "fetch_corpora", "load_task", "load_unseen"]
