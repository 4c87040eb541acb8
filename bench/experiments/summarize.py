"""Check the benchmark's targets against the experiments' results (attprune/experiments/summary.py).

    python bench/experiments/summarize.py [--results bench/results/tasks]

Writes summary.json and summary.md beside the results and prints the markdown.
"""

from attprune.experiments.summary import main

if __name__ == "__main__":
    main()
