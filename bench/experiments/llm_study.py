"""Which attribution recipe prunes SmolLM2 best: factors one at a time around today's recipe
(attprune/experiments/llm_study.py says what it measures).

    python bench/experiments/llm_study.py [--factors allocation aggregation] [--draws 0 1 2]

Writes bench/results/llm/study/ (rows.jsonl, summary.json, README.md, plots); resumable.
"""

import sys

from attprune.experiments.llm_study import main

if __name__ == "__main__":
    sys.exit(main())
