"""Build (or reuse) the cached multi-task MiniLM and print its per-task dev/test accuracy.

    python bench/experiments/build_multitask.py     # <= 10 minutes on 2 CPU cores, then cached

Writes bench/results/tasks/multitask.json (the training report: budget used, steps,
per-task scores).
"""

import json
import time

import torch

from attprune.io import write_json
from attprune.tasks.multitask import load_or_train
from common import RESULTS

if __name__ == "__main__":
    torch.set_num_threads(2)
    started = time.perf_counter()
    mt = load_or_train()
    write_json(RESULTS / "multitask.json", mt.report)
    print(json.dumps({k: mt.report[k] for k in ("train_seconds", "steps", "dev", "test")}, indent=2))
    print(f"ready in {time.perf_counter() - started:.0f} s (training budget {mt.config.budget_seconds:.0f} s)")
