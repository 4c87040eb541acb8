"""The compacted model per task at 50% FFN sparsity: parameters, CPU latency, accuracy
(attprune.experiments.encoder_benchmark.compact_points). Run it on a quiet machine: the
latency is what it measures.

    python bench/experiments/compact_points.py [--tasks mr,hedge] [--repeats 10]

Writes bench/results/tasks/compact_at_50.json.
"""

from attprune.experiments.encoder_benchmark import compact_main

if __name__ == "__main__":
    compact_main()
