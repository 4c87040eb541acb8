"""``mask(model, plan)``: zero the pruned units without changing any shape; reversible.

A forward pre-hook on each site projection multiplies its input features by a 0/1 vector
(FFN: the neuron's activation; attention: the head's context), so the model computes what
its compacted version would. Masks are ordinary torch hooks: handles can be removed in any
order and other hooks on the same modules are unaffected. Works on transformers 5.x, which
ignores ``head_mask``.

With ``compensate=means`` the pruned features are replaced by their means instead of zeros:
what ``compact(model, plan, compensate=means)`` computes with the means folded into the bias.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from ..plan import Plan
from .core import compensation_means
from .slicing import head_features


class MaskHandle:
    """Returned by ``mask``; ``remove()`` puts the model back exactly as it was."""

    def __init__(self, hooks: list):
        self._hooks = hooks

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def feature_mask(n_units: int, unit_size: int, kept: torch.Tensor) -> torch.Tensor:
    """[n_units * unit_size] of 1.0 for the features of kept units, 0.0 elsewhere."""
    keep = torch.zeros(n_units * unit_size)
    keep[head_features(kept, unit_size)] = 1.0
    return keep


def _scale_input(keep: torch.Tensor):
    def pre_hook(module, args):
        x = args[0]
        return (x * keep.to(x.device, x.dtype), *args[1:])
    return pre_hook


def _replace_input(keep: torch.Tensor, fill: torch.Tensor):
    def pre_hook(module, args):
        x = args[0]
        return (torch.where(keep, x, fill.to(x.dtype)), *args[1:])
    return pre_hook


def mask(model: nn.Module, plan: Plan, *, compensate=None) -> MaskHandle:
    """Zero the plan's pruned units (same shapes); ``handle.remove()`` undoes it.

    >>> handle = attprune.mask(model, plan)
    >>> masked_logits = model(**batch).logits
    >>> handle.remove()                       # or: with attprune.mask(model, plan): ...

    ``compensate``: {site path: mean input} (as ``compact`` takes it): the pruned features
    take their means instead of 0, so the outputs equal ``compact(model, plan, compensate=means)``.

    >>> with attprune.mask(model, plan, compensate=attprune.input_means(model, batches)): ...
    """
    devices.check_offload_layout(model)
    sites = plan.validate(model)
    means = compensation_means(sites, plan, compensate)
    hooks = []
    for site in sites:
        device = devices.execution_device(model, site.path)
        keep = feature_mask(site.n_units, site.unit_size, plan.kept(site.path)).to(device)
        if site.path in means:
            fill = means[site.path].to(device) * (1 - keep)
            hook = _replace_input(keep.bool(), fill)
        else:
            hook = _scale_input(keep)
        hooks.append(site.module(model).register_forward_pre_hook(hook))
    return MaskHandle(hooks)
