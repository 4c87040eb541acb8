"""Pruning SmolLM2-135M-Instruct on prompt tasks: every criterion with its default recipe,
several attribution draws (attprune/experiments/llm_benchmark.py says what it measures).

    python bench/experiments/llm_pruning.py [--tasks bbc] [--methods ig fisher] [--draws 0 1 2]

Writes bench/results/llm/ (rows.jsonl, summary.json, README.md, plots); resumable.
"""

import sys

from attprune.experiments.llm_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
