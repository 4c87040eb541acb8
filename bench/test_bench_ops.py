"""pytest-benchmark entries: the IG attribute step, PyTorch reference vs the fused backends.

    .venv/bin/python -m pytest bench/test_bench_ops.py --benchmark-group-by=param:site

Rows of one group share inputs (MiniLM's site shapes, 20 steps x 16 examples x 64 tokens);
``bench/ig_step_ops.py`` reports the same comparison as ratios.
"""

import pytest
import torch

import ig_step_ops
from attprune import ops

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = ["torch"] + [b for b in ("triton", "native") if b in ops.available_backends(DEVICE) and
                        not (b == "triton" and DEVICE.type == "cpu")]  # the interpreter is not a speed


@pytest.mark.parametrize("site", ["ffn", "heads"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_ig_attribute_step(benchmark, site, backend):
    torch.set_num_threads(2)
    d_out, d_in, unit = ig_step_ops.SHAPES["minilm"][site]
    grads, w, weight, x, mask = ig_step_ops.inputs(20, 16, 64, d_out, d_in, torch.float32, DEVICE)
    expected = ops.reference.ig_attribute(grads, w, weight, x, mask, unit)
    got = benchmark(lambda: ops.ig_attribute(grads, w, weight, x, mask, unit, backend=backend))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
