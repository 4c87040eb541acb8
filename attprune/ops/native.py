"""The native ops library (``CMakeLists.txt`` builds ``kernels/csrc`` into ``attprune/_native/``):
loaded when built, never required.

It defines ``torch.ops.attprune.ig_attribute`` (CPU). Its fake (meta) implementation below
says what the op returns without running it, so code calling it traces under
``torch.compile`` and ``torch.library.opcheck`` checks the op's registration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

LIBRARY_DIR = Path(__file__).resolve().parents[1] / "_native"
BUILD_HINT = "build it with `make native` (cmake -S . -B build && cmake --build build)"


@lru_cache(maxsize=1)
def load_error() -> str | None:
    """None once ``torch.ops.attprune`` is loaded; otherwise why it is not."""
    path = os.environ.get("ATTPRUNE_NATIVE_LIB") or next(iter(sorted(LIBRARY_DIR.glob("libattprune_ops*"))), None)
    if path is None:
        return f"the native ops library is not built; {BUILD_HINT}"
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as err:  # e.g. built against another torch
        return f"cannot load {path} ({err}); rebuild it: {BUILD_HINT}"
    _register_fake()
    return None


def _register_fake() -> None:
    @torch.library.register_fake("attprune::ig_attribute")
    def _ig_attribute_fake(grads, step_weights, weight, x, mask, unit_size):
        torch._check(weight.shape[1] % unit_size == 0, lambda: "unit_size must divide the input features")
        return x.new_empty((x.shape[0], weight.shape[1] // unit_size), dtype=torch.float32)


def ig_attribute(grads, step_weights, weight, x, mask, unit_size) -> torch.Tensor:
    """``torch.ops.attprune.ig_attribute``; the contract of :func:`attprune.ops.reference.ig_attribute`."""
    error = load_error()
    if error:
        raise RuntimeError(error)
    return torch.ops.attprune.ig_attribute(grads, step_weights, weight, x, mask, unit_size)
