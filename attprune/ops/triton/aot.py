"""Every Triton kernel configuration attprune launches, compiled ahead of time for GPU targets.

No GPU is needed: ``triton.compile`` with a ``GPUTarget`` lowers a kernel to PTX and a cubin
with Triton's own ``ptxas``, and ``cuobjdump`` (shipped with Triton too) reads the cubin's
resource use. The configurations are exactly the launchers' (``ig_attribute.launch_config``,
``ig_interpolate``'s blocks, with and without a token selection): each input dtype, and each kind
of unit (FFN neurons; heads of a power-of-two width, summed in registers; heads of another width).

    python -m attprune.ops.triton.aot bench/results/triton_aot    # a table of every config x target

Run it without ``TRITON_INTERPRET=1`` (the interpreter replaces the kernels with Python).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .ig_attribute import _ig_attribute_kernel, launch_config
from .ig_interpolate import BLOCK_D, BLOCK_R, _ig_interpolate_kernel

#: compute capabilities: Ampere (A100), Hopper (H100 / H200), Blackwell (B200)
TARGETS = {"sm_80": 80, "sm_90": 90, "sm_100": 100}
DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
#: unit widths that give distinct configurations: an FFN neuron, power-of-two heads (64, 128,
#: 256 widen BLOCK_I differently) and a head width that is not a power of two
UNIT_SIZES = (1, 64, 128, 256, 80)


@dataclass(frozen=True)
class Compiled:
    kernel: str
    target: str
    dtype: str
    config: str
    registers: int
    spills: int
    shared_bytes: int
    seconds: float


def _signature(kernel, pointer_types: dict[str, str], constants: dict) -> dict[str, str]:
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointer_types.get(name, "*fp32")
        else:
            signature[name] = "i32"
    return signature


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers, spilled bytes: local memory) from ``cuobjdump -res-usage``."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([tool, "-res-usage", file.name], capture_output=True, text=True, check=True).stdout
    registers = int(re.search(r"REG:(\d+)", report).group(1))
    spills = int(re.search(r"LOCAL:(\d+)", report).group(1)) + int(re.search(r"STACK:(\d+)", report).group(1))
    return registers, spills


def _compile(kernel, name: str, target: str, dtype: str, config: str, pointer_types: dict, constants: dict,
             warps: int) -> Compiled:
    started = time.perf_counter()
    source = ASTSource(fn=kernel, signature=_signature(kernel, pointer_types, constants), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", TARGETS[target], 32), options={"num_warps": warps})
    registers, spills = _resources(compiled.asm["cubin"])
    return Compiled(name, target, dtype, config, registers, spills, compiled.metadata.shared,
                    round(time.perf_counter() - started, 2))


def configurations() -> list[tuple]:
    """(kernel, name, dtype, config label, pointer types, constants, warps) of every launch."""
    found = []
    for dtype, short in DTYPES.items():
        data = {"g_ptr": f"*{short}", "weight_ptr": f"*{short}", "x_ptr": f"*{short}"}
        for unit in UNIT_SIZES:
            constants, warps = launch_config(dtype, dtype, unit)
            label = ("grouped" if constants["GROUPED"] else "per-feature") + f", unit {unit}, blocks " + \
                f"{constants['BLOCK_T']}x{constants['BLOCK_O']}x{constants['BLOCK_I']}"
            found.append((_ig_attribute_kernel, "ig_attribute", short, label, data, constants, warps))
        for selected in (False, True):  # every token, or the tokens ``positions`` selects
            found.append((_ig_interpolate_kernel, "ig_interpolate", short,
                          f"blocks {BLOCK_R}x{BLOCK_D}" + (", selected tokens" if selected else ""),
                          {"z_ptr": f"*{short}", "bias_ptr": f"*{short}", "out_ptr": f"*{short}",
                           "select_ptr": "*i8" if selected else "*fp32"},
                          {"BLOCK_R": BLOCK_R, "BLOCK_D": BLOCK_D, "SELECTED": selected}, 4))
    return found


def compile_all(targets=tuple(TARGETS)) -> list[Compiled]:
    """Compile every configuration for every target (a failure raises)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter replaces the kernels with Python")
    return [_compile(kernel, name, target, dtype, label, pointers, constants, warps)
            for target in targets for kernel, name, dtype, label, pointers, constants, warps in configurations()]


def markdown(results: list[Compiled]) -> str:
    lines = ["| kernel | target | dtype | config | registers | spilled bytes | shared bytes |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.kernel} | {r.target} | {r.dtype} | {r.config} | {r.registers} | {r.spills} | {r.shared_bytes} |"
              for r in results]
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    rows = compile_all()
    table = markdown(rows)
    print(table)
    if len(sys.argv) > 1:  # a path stem: STEM.json and STEM.md
        stem = Path(sys.argv[1])
        stem.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        stem.with_suffix(".md").write_text(f"# Triton kernels compiled ahead of time (triton {triton.__version__})\n\n"
                                           + table + "\n")
