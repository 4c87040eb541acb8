#!/usr/bin/env bash
# The GPU checks, as one command on one GPU, within 8 minutes:
#   1. the gpu-marked tests and every Triton kernel test, compiled (not interpreted), fp16/bf16;
#   2. attribution throughput, attprune vs Captum's LayerIntegratedGradients (its defaults:
#      Gauss-Legendre, 50 steps), a BERT-base-shaped classifier and a Llama-style 1B in bf16;
#   3. compaction latency, dense vs masked vs compact, the same two models in bf16.
# JSON and markdown go to $OUT (the device tool's output folder), else bench/results/gpu/.
#
#   bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#   SMOKE=1 PYTHON=.venv/bin/python bash bench/gpu_check.sh    # the same plumbing on CPU (tiny sizes)
#
# The device machine has no network: Captum travels as a wheel in .whl/ (see bench/README.md,
# "GPU checks"); attprune runs from the source tree (PYTHONPATH), on the machine's own torch,
# transformers, accelerate and triton.
set -uo pipefail
PY=${PYTHON:-python3}  # the device machine's python3 holds torch; here: PYTHON=.venv/bin/python
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu; BERT="--n 2 --seq 16 --steps 2 --captum-steps 2 --repeats 1"; LLAMA="$BERT"
  LAT="--batch 1 --seq 16 --repeats 1 --models minilm"; TESTS="tests/test_kernels.py -k interpolate"
  METHODS=attprune-torch,captum-lig
else
  DEVICE=cuda; BERT="--n 16 --seq 128"; LLAMA="--n 4 --seq 256 --captum-steps 20"
  LAT="--batch 1 8 32 --seq 128 512 --models bert-base,llama-1b"; TESTS="tests/test_kernels.py tests/test_dispatch.py"
  METHODS=attprune-torch,attprune-triton,captum-lig
fi
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its log, remember a failure
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "$name: exit $rc" >> "$OUT/status.txt"
  [ "$rc" = 0 ] || status=1
}
: > "$OUT/status.txt"
"$PY" - > "$OUT/environment.json" <<'PY'
import json, platform, torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
try:
    import triton
    info["triton"] = triton.__version__
except ImportError:
    pass
print(json.dumps(info, indent=2))
PY
# 1. tests: on CUDA the Triton tests run the compiled kernels (conftest turns the interpreter on only without a GPU)
step tests 150 "$PY" -m pytest -q -p no:cacheprovider $TESTS
# 2. attribution throughput (bf16)
step attribution_bert-base 120 "$PY" bench/attribution_throughput.py --device $DEVICE --model bert-base \
  --dtype bfloat16 $BERT --methods $METHODS --out "$OUT/attribution_bert-base.json"
step attribution_llama-1b 150 "$PY" bench/attribution_throughput.py --device $DEVICE --model llama-1b \
  --dtype bfloat16 $LLAMA --methods $METHODS --out "$OUT/attribution_llama-1b.json"
# 3. compaction latency (bf16)
step compaction 60 "$PY" bench/compaction_latency.py --device $DEVICE --dtype bfloat16 $LAT \
  --out "$OUT/compaction.json"
"$PY" bench/gpu_report.py "$OUT" > "$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
exit $status
