"""Keep rows (output features) or columns (input features) of a Linear or GPT-2 Conv1D.

New tensors are contiguous and keep dtype and device (meta included: compaction also
builds the compact skeleton that ``from_pretrained`` loads weights into); a module that a
``device_map`` offloaded stays offloaded with its sliced weights (``attprune.devices``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from ..sites.site import is_conv1d


def _select(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    value = devices.read(module, name).detach()
    devices.write(module, name, value.index_select(dim, index.to(value.device)))


def keep_outputs(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the output features ``index`` (rows of a Linear weight, bias entries)."""
    if is_conv1d(module):  # weight [in, out]
        _select(module, "weight", 1, index)
        module.nf = index.numel()
    else:
        _select(module, "weight", 0, index)
        module.out_features = index.numel()
    if getattr(module, "bias", None) is not None:
        _select(module, "bias", 0, index)


def keep_inputs(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the input features ``index`` (columns of a Linear weight)."""
    if is_conv1d(module):
        _select(module, "weight", 0, index)
    else:
        _select(module, "weight", 1, index)
        module.in_features = index.numel()


def head_features(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices of whole heads: head h -> [h * head_dim, (h + 1) * head_dim)."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
