"""Real-task experiment: unsupervised (attprune/experiments/encoder_benchmark.py says what it measures).

    python bench/experiments/unsupervised.py [--tasks mr,hedge] [--n-attr 256] [--max-test 1000]

Writes bench/results/tasks/unsupervised.json, .md and .png; builds or reuses the cached
multi-task model first (bench/experiments/build_multitask.py).
"""

from attprune.experiments.encoder_benchmark import main

if __name__ == "__main__":
    main("unsupervised")
