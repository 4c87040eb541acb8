"""Adapting by pruning at the paper's scale (attprune.experiments.adapting: see its docstring or --help).

    python bench/experiments/adapt_by_pruning.py --tasks mr,hedge
"""

from attprune.experiments.adapting import main

if __name__ == "__main__":
    main()
