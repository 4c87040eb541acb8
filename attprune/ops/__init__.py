"""The IG step ops and their backends.

Two ops carry the arithmetic of per-site IG outside the model's own forward/backward:

* ``ig_interpolate``: the m-step batch of a site's output, ``Z' + alpha_k (Z - Z')``;
* ``ig_attribute``: per-example unit scores from the step gradients, fused
  (step sum -> GEMM with W -> x activation -> token and unit sums).

Backends: ``torch`` (``reference.py``, the reference, any device and dtype), ``triton``
(``kernels/triton``: CUDA, or CPU under ``TRITON_INTERPRET=1`` for tests), ``native``
(``kernels/csrc`` built by ``CMakeLists.txt``: CPU). ``auto`` picks ``triton`` for CUDA
tensors when Triton is installed, else ``torch``; the fused backends take the ``sum`` and
``mean`` token reductions and float32 / bfloat16 / float16 models.

    >>> attprune.attribute(model, batches, backend="triton")      # on a GPU
    >>> attprune.ops.available_backends(torch.device("cpu"))
    ['torch', 'native']
"""

from __future__ import annotations

import torch

from . import native, reference, triton_backend

BACKENDS = ("auto", "torch", "triton", "native")
FUSED_REDUCTIONS = ("sum", "mean")
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _unavailable(backend: str, device: torch.device) -> str | None:
    if backend == "triton":
        return triton_backend.unavailable(device)
    if backend == "native":
        if device.type != "cpu":
            return f"the native op is built for CPU tensors only (got {device.type})"
        return native.load_error()
    return None


def available_backends(device: torch.device) -> list[str]:
    """The backends that can run on ``device`` here."""
    return [b for b in BACKENDS[1:] if _unavailable(b, device) is None]


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, reduce: str = "sum") -> str:
    """The concrete backend for ``backend`` (possibly ``auto``); ValueError if it cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    fused_ok = reduce in FUSED_REDUCTIONS and dtype in FUSED_DTYPES
    if backend == "auto":
        if device.type == "cuda" and fused_ok and _unavailable("triton", device) is None:
            return "triton"
        return "torch"
    if backend == "torch":
        return backend
    why = _unavailable(backend, device)
    if why is None and reduce not in FUSED_REDUCTIONS:
        why = f"reduce_tokens={reduce!r} is not fused (it takes {FUSED_REDUCTIONS}); use backend='torch'"
    if why is None and dtype not in FUSED_DTYPES:
        why = f"{dtype} is not supported (float32, bfloat16, float16); use backend='torch'"
    if why is not None:
        raise ValueError(f"backend={backend!r} cannot run here: {why}")
    return backend


def ig_interpolate(z: torch.Tensor, z_baseline: torch.Tensor, alphas: torch.Tensor, *,
                   backend: str = "torch") -> torch.Tensor:
    """[m * B, T, D]: the site output at each step node (step-major)."""
    if backend == "triton":
        return triton_backend.ig_interpolate(z, z_baseline, alphas)
    return reference.ig_interpolate(z, z_baseline, alphas)


def ig_attribute(grads: torch.Tensor, step_weights: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 mask: torch.Tensor, unit_size: int, *, x_baseline: torch.Tensor | None = None,
                 out: torch.Tensor | None = None, backend: str = "torch",
                 acc_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Add one chunk of steps' unit scores (summed over real tokens) to ``out`` ([B, units]).

    grads [m, B, T, O] = dF/dZ at each step, step_weights [m] (quadrature weights), weight
    [O, I], x [B, T, I] the site input, mask [B, T] real tokens; ``x_baseline`` (None: 0).
    """
    if backend == "triton":
        return triton_backend.ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline, out)
    if backend == "native":
        scores = native.ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline)
    else:
        scores = reference.ig_attribute(grads, step_weights, weight, x, mask, unit_size, x_baseline, acc_dtype)
    return scores if out is None else out.add_(scores.to(out.dtype))
