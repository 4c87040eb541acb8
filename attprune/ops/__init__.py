"""The IG step ops and their backends: one path, three implementations of its arithmetic.

Per-site IG does two things outside the model's own forward/backward (see ``reference.py``
for the formulas): ``ig_interpolate`` builds the step batch of a site's output, and
``IGStepScores`` turns the steps' output gradients into per-example unit scores, chunk of
steps by chunk of steps. Backends are registered (``register_backend(Backend(...))``, one
object per implementation, like methods and export formats):

* ``torch`` (``reference.py``): any device, dtype and token reduction; the default on CPU;
* ``triton`` (``triton/``): fused kernels (step sum -> GEMM -> x activation -> token and
  unit sums, nothing [B, T, d] written); CUDA, or CPU under ``TRITON_INTERPRET=1`` (tests);
* ``native`` (``kernels/csrc`` built by ``CMakeLists.txt``, loaded by ``native.py``): the
  same fusion on CPU.

``auto`` picks ``triton`` on CUDA when it can run, else ``torch``. The fused backends take the
``sum`` / ``mean`` token reductions and float32 / bfloat16 / float16 models. Every backend takes
``positions`` (attribute at some tokens only): the interpolation's [B, T] selection
(``ig_interpolate``: Triton in its kernel, the others in PyTorch) and the reduction's token
mask, which is the selection.

    >>> attprune.attribute(model, batches, backend="triton")      # on a GPU
    >>> attprune.ops.available_backends(torch.device("cpu"))
    ['torch', 'native']
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InputError
from . import native, reference

FUSED_REDUCTIONS = ("sum", "mean")
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Backend:
    """One implementation of the IG step arithmetic.

    fused: adds each chunk of steps' unit scores straight from the gradients (the ``sum`` /
        ``mean`` token reductions and ``FUSED_DTYPES`` only); not fused: sums the step
        gradients first and multiplies by the weight once (any reduction and dtype).
    unavailable: ``device -> why it cannot run there`` (None: it can).
    attribute: ``(grads, step_weights, weight, x, mask, unit_size, out=None) -> [B, units]``: one
        chunk of steps' scores (``reference.ig_attribute``'s contract) added to ``out`` (None: a
        new tensor); None for the unfused reference.
    interpolate: ``(z, bias, alphas, positions) -> [m * B, T, D]`` (None: ``reference.ig_interpolate``).
    auto_on: device types where ``backend="auto"`` picks it (when it can run and the reduction
        and dtype are fused ones).
    """

    name: str
    unavailable: Callable[[torch.device], str | None]
    fused: bool = True
    attribute: Callable | None = None
    interpolate: Callable | None = None
    auto_on: tuple[str, ...] = ()


BACKEND_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend of the IG step ops."""
    BACKEND_REGISTRY[backend.name] = backend
    return backend


def _triton_unavailable(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'attprune[triton]')"
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (f"the Triton kernels run on CUDA tensors (got {device.type}); on CPU set TRITON_INTERPRET=1 before "
            "importing attprune (slow: for tests) or use backend='torch' / 'native'")


def _native_unavailable(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"the native op is built for CPU tensors only (got {device.type})"
    return native.load_error()


def _on_device_of(tensor: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's (sites of a dispatched
    model live on different GPUs)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _adding(scores_of: Callable) -> Callable:
    """A step-scores function that returns new scores, made to add them to ``out``."""
    def attribute(grads, step_weights, weight, x, mask, unit_size, out=None):
        scores = scores_of(grads, step_weights, weight, x, mask, unit_size)
        return scores if out is None else out.add_(scores.to(out.dtype))
    return attribute


def _triton_interpolate(z, bias, alphas, positions):
    from .triton.ig_interpolate import ig_interpolate as kernel

    with _on_device_of(z):
        return kernel(z, bias, alphas, positions)


def _triton_attribute(grads, step_weights, weight, x, mask, unit_size, out=None):
    from .triton.ig_attribute import ig_attribute as kernel

    with _on_device_of(grads):
        return kernel(grads, step_weights, weight, x, mask, unit_size, out=out)


register_backend(Backend("torch", lambda device: None, fused=False))
register_backend(Backend("triton", _triton_unavailable, attribute=_triton_attribute, interpolate=_triton_interpolate,
                         auto_on=("cuda",)))
register_backend(Backend("native", _native_unavailable, attribute=_adding(native.ig_attribute)))

#: what ``backend=`` takes (``"auto"`` picks a registered backend)
BACKENDS = ("auto", *BACKEND_REGISTRY)


def backend(name: str) -> Backend:
    if name not in BACKEND_REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose one of {('auto', *BACKEND_REGISTRY)}")
    return BACKEND_REGISTRY[name]


def unavailable(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device`` here (None: it can)."""
    return backend(name).unavailable(device)


def available_backends(device: torch.device) -> list[str]:
    """The backends that can run on ``device`` here."""
    return [name for name, b in BACKEND_REGISTRY.items() if b.unavailable(device) is None]


def _refusal(chosen: Backend, device: torch.device, dtype: torch.dtype, reduce: str) -> str | None:
    why = chosen.unavailable(device)
    if why is None and chosen.fused and reduce not in FUSED_REDUCTIONS:
        why = f"reduce_tokens={reduce!r} is not fused (it takes {FUSED_REDUCTIONS}); use backend='torch'"
    if why is None and chosen.fused and dtype not in FUSED_DTYPES:
        why = f"{dtype} is not supported (float32, bfloat16, float16); use backend='torch'"
    return why


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype, reduce: str = "sum") -> str:
    """The concrete backend for ``name`` (possibly ``auto``); ``InputError`` if it cannot run."""
    if name == "auto":
        for candidate in BACKEND_REGISTRY.values():
            if device.type in candidate.auto_on and _refusal(candidate, device, dtype, reduce) is None:
                return candidate.name
        return "torch"
    why = _refusal(backend(name), device, dtype, reduce)
    if why is not None:
        raise InputError(f"backend={name!r} cannot run here: {why}")
    return name


def ig_interpolate(z: torch.Tensor, bias: torch.Tensor | None, alphas: torch.Tensor, *,
                   positions: torch.Tensor | None = None, backend: str = "torch") -> torch.Tensor:
    """[m * B, T, D]: the site output at each node, step-major, interpolated at ``positions``
    only ([B, T] bool; None: everywhere) (``reference.ig_interpolate``)."""
    kernel = BACKEND_REGISTRY[backend].interpolate or reference.ig_interpolate
    return kernel(z, bias, alphas, positions)


def ig_attribute(grads: torch.Tensor, step_weights: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 mask: torch.Tensor, unit_size: int, *, out: torch.Tensor | None = None,
                 backend: str = "torch") -> torch.Tensor:
    """Add one chunk of steps' unit scores, summed over real tokens, to ``out`` ([B, units]);
    the contract of ``reference.ig_attribute``."""
    attribute = BACKEND_REGISTRY[backend].attribute or _adding(reference.ig_attribute)
    return attribute(grads, step_weights, weight, x, mask, unit_size, out=out)


class IGStepScores:
    """Per-example unit scores of one site, fed chunk of steps by chunk of steps.

    ``torch`` sums the step gradients first (any token reduction) and multiplies by the weight
    once at the end; a fused backend adds each chunk's scores straight from its gradients
    (scores are linear in them).

    >>> acc = IGStepScores(weight, x, mask, unit_size=1, reduce="sum", backend="torch")
    >>> for grads, step_weights in chunks:
    ...     acc.add(grads, step_weights)
    >>> acc.scores()          # [B, units]
    """

    def __init__(self, weight: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, unit_size: int,
                 reduce: str = "sum", backend: str = "torch"):
        self.weight, self.x, self.mask, self.unit_size = weight, x, mask, unit_size
        self.reduce, self.backend = reduce, backend
        self.fused = BACKEND_REGISTRY[backend].fused
        self.dtype = reference.accumulation_dtype(x.dtype)
        self._sum: torch.Tensor | None = None  # torch: the summed gradient; fused: the scores

    def add(self, grads: torch.Tensor, step_weights: torch.Tensor) -> None:
        if not self.fused:
            part = reference.step_sum(grads, step_weights, self.dtype)
            self._sum = part if self._sum is None else self._sum.add_(part)
        else:
            self._sum = ig_attribute(grads, step_weights, self.weight, self.x, self.mask, self.unit_size,
                                     out=self._sum, backend=self.backend)

    def token_sums(self) -> torch.Tensor:
        """[B]: the scores of every unit and real token summed, whatever the reduction (what
        IG's completeness compares with F(x) - F(baseline))."""
        if self._sum is None:
            raise ValueError("no steps were added")
        if not self.fused:
            return reference.unit_scores(self._sum, self.weight, self.x, self.mask, self.unit_size, "sum").sum(-1)
        return self._sum.to(self.dtype).sum(-1)

    def scores(self) -> torch.Tensor:
        if self._sum is None:
            raise ValueError("no steps were added")
        if not self.fused:
            return reference.unit_scores(self._sum, self.weight, self.x, self.mask, self.unit_size, self.reduce)
        scores = self._sum.to(self.dtype)
        if self.reduce == "mean":
            scores = scores / self.mask.to(scores.device).sum(1, keepdim=True).clamp_min(1)
        return scores
