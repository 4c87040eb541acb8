"""``mask(model, plan)``: zero the pruned units without changing any shape; reversible.

A site projection's input features of pruned units are multiplied by 0 (FFN: the neuron's
activation; attention: the head's context), through the same forward-patching mechanism
attribution uses (``attprune.hooks``).  Works on transformers 5.x, which ignores
``head_mask``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from ..hooks import patch_forward
from ..plan.plan import Plan
from .slicing import head_features


class MaskHandle:
    """Returned by ``mask``; ``remove()`` puts the model back exactly as it was."""

    def __init__(self, patches):
        self._patches = patches

    def remove(self) -> None:
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def feature_mask(n_units: int, unit_size: int, kept: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros(n_units * unit_size)
    keep[head_features(kept, unit_size)] = 1.0
    return keep


def mask(model: nn.Module, plan: Plan) -> MaskHandle:
    """Zero the plan's pruned units (same shapes); ``handle.remove()`` undoes it.

    >>> handle = attprune.mask(model, plan)
    >>> masked_logits = model(**batch).logits
    >>> handle.remove()
    """
    devices.check_offload_layout(model)
    patches = []
    for site in plan.validate(model):
        module = site.module(model)
        keep = feature_mask(site.n_units, site.unit_size, plan.kept(site.path))
        keep = keep.to(devices.execution_device(model, site.path))

        def masked(original, args, kwargs, keep=keep):
            x = args[0]
            return original(x * keep.to(x.device, x.dtype), *args[1:], **kwargs)

        patches.append(patch_forward(module, masked))
    return MaskHandle(patches)
