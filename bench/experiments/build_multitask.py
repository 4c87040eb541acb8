"""Build (or reuse) the cached multi-task MiniLM and print its per-task dev/test accuracy.

    python bench/experiments/build_multitask.py     # <= 10 minutes on 2 CPU cores, then cached

Writes bench/results/tasks/multitask.json (the training report: budget used, steps,
per-task scores).
"""

from attprune.experiments.multitask import main

if __name__ == "__main__":
    main()
