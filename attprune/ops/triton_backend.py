"""The Triton kernels (``kernels/triton/``, installed as ``attprune.kernels``) behind the ops interface."""

from __future__ import annotations

import os

import torch


def unavailable(device: torch.device) -> str | None:
    """None when the Triton kernels can run on ``device``; otherwise why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (f"the Triton kernels run on CUDA tensors (got {device.type}); on CPU set TRITON_INTERPRET=1 before "
            "importing attprune (slow: for tests) or use backend='torch' / 'native'")


def ig_interpolate(z, z_baseline, alphas):
    from ..kernels.ig_interpolate import ig_interpolate

    return ig_interpolate(z, z_baseline, alphas)


def ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline=None, out=None):
    from ..kernels.ig_attribute import ig_attribute

    return ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline=x_baseline, out=out)
