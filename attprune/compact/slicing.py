"""Keep rows (output features) or columns (input features) of a Linear or GPT-2 Conv1D.

New tensors are contiguous and keep dtype and device (meta included: compaction also
builds the compact skeleton that ``from_pretrained`` loads weights into).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sites.site import is_conv1d


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def keep_outputs(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the output features ``index`` (rows of a Linear weight, bias entries)."""
    index = index.to(module.weight.device)
    if is_conv1d(module):  # weight [in, out]
        _set(module, "weight", module.weight.detach().index_select(1, index))
        module.nf = index.numel()
    else:
        _set(module, "weight", module.weight.detach().index_select(0, index))
        module.out_features = index.numel()
    if getattr(module, "bias", None) is not None:
        _set(module, "bias", module.bias.detach().index_select(0, index))


def keep_inputs(module: nn.Module, index: torch.Tensor) -> None:
    """Keep only the input features ``index`` (columns of a Linear weight)."""
    index = index.to(module.weight.device)
    if is_conv1d(module):
        _set(module, "weight", module.weight.detach().index_select(0, index))
    else:
        _set(module, "weight", module.weight.detach().index_select(1, index))
        module.in_features = index.numel()


def head_features(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices of whole heads: head h -> [h * head_dim, (h + 1) * head_dim)."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
