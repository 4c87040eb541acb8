"""Real-task experiment: low resource (attprune/experiments/encoder_benchmark.py says what it measures).

    python bench/experiments/low_resource.py [--tasks mr,hedge] [--n-attr 256] [--max-test 1000]

Writes bench/results/tasks/low_resource.json, .md and .png; builds or reuses the cached
multi-task model first (bench/experiments/build_multitask.py).
"""

from attprune.experiments.encoder_benchmark import main

if __name__ == "__main__":
    main("low_resource")
