"""Run "the rest of the model" from a site: record module calls once, replay them tiled.

Integrated gradients at a site needs the model from that site upwards, m times.  Every
module call that *finished* before the site's projection started does not depend on the
site, so its output is the same at every step: we record it once on the clean batch and,
in the m-step pass, return it tiled m times instead of computing it again (the lower
blocks, the attention sublayer under an FFN site, the q/k/v projections under an
attention site, embeddings, rotary tables, a whole encoder under a decoder site).  Only
*maximal* such calls are replaced (a replaced call's inner calls never happen), so the
m-step pass computes only what lies above the site.

Which output tensors carry the batch is learned by a probe (one forward with 1 row and
one with 2 rows of the batch): a tensor whose leading size follows the row count is
batch-major and gets tiled; any other (a [1, heads, T, T] position bias, a [T, T, heads]
bucket table) is returned as it was.  This works for any architecture without a table.

How a call is replaced: attprune's hooks on a model are ordinary torch hooks (recording
calls here, capturing site inputs, masks, T5's per-layer bias), except this one thing a hook
cannot do, skip a module's computation. ``replaced_forwards`` swaps the ``forward`` of the
modules to replay for the duration of one pass (a ``with`` block, restored in reverse order
on exit); nothing else in attprune touches ``forward``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..batches import tile
from ..errors import UnsupportedModelError


def map_tensors(obj: Any, fn: Callable[[int, torch.Tensor], torch.Tensor], counter: list[int] | None = None) -> Any:
    """Apply ``fn(leaf_index, tensor)`` to every tensor in a nest of tuples/lists/dicts."""
    counter = [0] if counter is None else counter
    if torch.is_tensor(obj):
        index = counter[0]
        counter[0] += 1
        return fn(index, obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn, counter) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn, counter) for v in obj)
    if isinstance(obj, dict):
        mapped = {k: map_tensors(v, fn, counter) for k, v in obj.items()}
        try:
            return type(obj)(**mapped)
        except TypeError:
            return type(obj)(mapped)
    return obj


def leading_sizes(obj: Any) -> list[int]:
    sizes: list[int] = []
    map_tensors(obj, lambda i, t: sizes.append(t.shape[0] if t.dim() else -1) or t)
    return sizes


@dataclass
class Call:
    """One call of one module during a forward pass."""

    module: str
    index: int  # the module's n-th call
    start: int
    end: int = -1


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)
    outputs: dict[tuple[str, int], Any] = field(default_factory=dict)

    def structure(self) -> list[tuple[str, int]]:
        return [(c.module, c.index) for c in self.calls]


@contextlib.contextmanager
def record_calls(model: nn.Module, keep: set[tuple[str, int]] | Callable[[str, int], bool] = frozenset()):
    """Log every module call (order, nesting); keep the outputs of the calls in ``keep``."""
    log = CallLog()
    counts: dict[str, int] = {}
    clock = [0]
    open_calls: dict[int, list[Call]] = {}
    wanted = keep if callable(keep) else (lambda name, i: (name, i) in keep)
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(mod, args, name=name):
            index = counts.get(name, 0)
            counts[name] = index + 1
            call = Call(name, index, clock[0])
            clock[0] += 1
            log.calls.append(call)
            open_calls.setdefault(id(mod), []).append(call)

        def post(mod, args, output, name=name):
            call = open_calls[id(mod)].pop()
            call.end = clock[0]
            clock[0] += 1
            if wanted(name, call.index):
                log.outputs[(name, call.index)] = map_tensors(output, lambda i, t: t.detach())

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield log
    finally:
        for h in handles:
            h.remove()


def calls_before(log: CallLog, site: str) -> list[tuple[str, int]]:
    """The maximal calls that finished before ``site`` started (their outputs cannot depend on it)."""
    starts = [c for c in log.calls if c.module == site]
    if len(starts) != 1:
        raise UnsupportedModelError(f"site {site} ran {len(starts)} times in one forward; attprune needs exactly one")
    site_start = starts[0].start
    done = [c for c in log.calls if c.end != -1 and c.end < site_start]
    maximal, reach = [], -1
    for call in sorted(done, key=lambda c: c.start):
        if call.start > reach:  # not nested in the previous maximal call
            maximal.append(call)
            reach = call.end
    return [(c.module, c.index) for c in maximal]


def surviving_calls(log: CallLog, replaced: set[tuple[str, int]]) -> dict[str, list[int]]:
    """Per module, its clean-pass calls that still happen when ``replaced`` calls are replayed."""
    spans = sorted(((c.start, c.end) for c in log.calls if (c.module, c.index) in replaced))
    survivors: dict[str, list[int]] = {}
    for call in log.calls:
        inside = any(s < call.start and call.end < e for s, e in spans)
        if not inside:
            survivors.setdefault(call.module, []).append(call.index)
    return survivors


def batch_major_leaves(sizes_one: list[int], sizes_two: list[int]) -> set[int]:
    return {i for i, (a, b) in enumerate(zip(sizes_one, sizes_two)) if a == 1 and b == 2}


def replay_plan(log: CallLog, replaced: set[tuple[str, int]], outputs: dict[tuple[str, int], Any],
                batch_major: dict[tuple[str, int], set[int]], times: int) -> dict[str, Callable]:
    """Forward replacements that return the recorded (tiled) outputs of ``replaced`` calls."""
    survivors = surviving_calls(log, replaced)
    plan = {}
    for module in {name for name, _ in replaced}:
        order = survivors[module]
        counter = [0]

        def forward(original, args, kwargs, module=module, order=order, counter=counter):
            position = counter[0]
            counter[0] += 1
            key = (module, order[position]) if position < len(order) else None
            if key not in replaced:
                return original(*args, **kwargs)
            leaves = batch_major.get(key, set())
            return map_tensors(outputs[key], lambda i, t: tile(t, times) if i in leaves else t)

        plan[module] = forward
    return plan


Replacement = Callable[[Callable, tuple, dict], Any]


@contextlib.contextmanager
def replaced_forwards(model: nn.Module, replacements: dict[str, Replacement]):
    """Within the block, calling the submodule at each path runs ``replacement(original_forward,
    args, kwargs)`` instead of its forward (hooks still run); every forward is restored on exit."""
    restore = []
    try:
        for name, replacement in replacements.items():
            module = model.get_submodule(name)
            restore.append((module, module.__dict__.get("forward")))
            module.forward = _routed(module.forward, replacement)
        yield
    finally:
        for module, own in reversed(restore):
            if own is None:
                del module.forward
            else:
                module.forward = own


def _routed(original: Callable, replacement: Replacement) -> Callable:
    def forward(*args, **kwargs):
        return replacement(original, args, kwargs)
    return forward
