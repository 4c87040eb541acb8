"""The compacted model per task at 50% FFN sparsity: parameters, CPU latency, accuracy.

Reuses the main sweep's cached IG scores (run main_sweep.py first, or they are computed),
ranks by mean |per-example IG| (``rank_by="mean_abs"``), compacts a copy of each task's
view and times one 64-example test batch, dense vs compact, best of ``--repeats``. Run it on
a quiet machine: the latency is what it measures.

    python bench/experiments/compact_points.py [--tasks mr,hedge] [--repeats 10]

Writes bench/results/tasks/compact_at_50.json.
"""

import argparse
import time

import torch

from attprune.io import write_json
from attprune.tasks.benchmark import score_cache
from attprune.tasks.experiment import attribution_rows, compact_point, score, task_run
from attprune.tasks.multitask import load_or_train
from attprune.tasks.pack import TASKS
from common import RESULTS

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--n-attr", type=int, default=32, help="attribution examples (the main sweep's)")
    p.add_argument("--max-test", type=int, default=300, help="test examples")
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes (the fastest is reported)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mt = load_or_train()
    results = {}
    for task in args.tasks.split(","):
        run = task_run(mt, task, args.max_test)
        scores, _ = score(run, "ig", attribution_rows(task, args.n_attr), units=("ffn", "heads"),
                          cache=score_cache(mt))
        point = compact_point(run, scores, ffn=0.5, repeats=args.repeats, rank_by="mean_abs")
        results[task] = dict(point, dense_accuracy=run.dense, speedup=round(point["dense_ms"] / point["compact_ms"], 3))
        print(f"{task}: {point['params_dense'] / 1e6:.1f}M -> {point['params_compact'] / 1e6:.1f}M params, "
              f"{point['dense_ms']:.0f} -> {point['compact_ms']:.0f} ms ({results[task]['speedup']}x), accuracy "
              f"dense {run.dense:.3f}, masked {point['masked_accuracy']:.3f}, compact {point['compact_accuracy']:.3f}")
    write_json(RESULTS / "compact_at_50.json", {"config": vars(args), "tasks": results, "time": time.time()})
