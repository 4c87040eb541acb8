"""The native ops library (``CMakeLists.txt`` -> ``attprune/_native/``): loaded when built, never required."""

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
    return None


def available() -> bool:
    return load_error() is None


def ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline=None) -> torch.Tensor:
    """``torch.ops.attprune.ig_attribute``; same contract as :func:`attprune.ops.reference.ig_attribute`."""
    error = load_error()
    if error:
        raise RuntimeError(error)
    baseline = None if x_baseline is None else x_baseline.expand_as(x)
    return torch.ops.attprune.ig_attribute(grads, step_weights, weight, x, baseline, mask, unit_size)
