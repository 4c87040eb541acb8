"""Check the benchmark's targets against the experiments' results (see attprune/tasks/summary.py).

    python bench/experiments/summarize.py [--results bench/results/tasks]

Writes summary.json and summary.md beside the results and prints the markdown.
"""

import argparse
from pathlib import Path

from attprune.tasks import summary
from common import RESULTS

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS), help="the experiments' results folder")
    folder = Path(p.parse_args().results)
    print(summary.markdown(summary.write(folder)), end="")
