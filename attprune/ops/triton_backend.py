"""The Triton kernels (``kernels/triton/``, installed as ``attprune.kernels``) behind the ops interface."""

from __future__ import annotations

import contextlib
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


def _on_device_of(tensor: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's (sites of a dispatched
    model live on different GPUs)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def ig_interpolate(z, z_baseline, alphas):
    from ..kernels.ig_interpolate import ig_interpolate

    with _on_device_of(z):
        return ig_interpolate(z, z_baseline, alphas)


def ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline=None, out=None):
    from ..kernels.ig_attribute import ig_attribute

    with _on_device_of(grads):
        return ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline=x_baseline, out=out)
