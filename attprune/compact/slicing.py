"""Keep rows (output features) or columns (input features) of a Linear or GPT-2 Conv1D, and
fold removed input features into the bias (compensation).

New tensors are contiguous and keep dtype and device (meta included: compaction also
builds the compact skeleton that ``from_pretrained`` loads weights into); a module that a
``device_map`` offloaded stays offloaded with its sliced weights (``attprune.devices``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from ..errors import InputError
from ..sites.site import is_conv1d, out_features


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


def removed_features(n_features: int, kept_features: torch.Tensor) -> torch.Tensor:
    """The input feature indices in [0, n_features) that ``kept_features`` leaves out (sorted)."""
    removed = torch.ones(n_features, dtype=torch.bool)
    removed[kept_features] = False
    return removed.nonzero().flatten()


def input_contribution(module: nn.Module, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``W[:, index] @ values[index]`` (W as [out, in], a Conv1D's too), accumulated in float64
    (float32 on MPS): what inputs ``index`` held at ``values`` add to every output.  ``values``
    is first rounded to the weight's dtype, as the masked model rounds it (``mask(...,
    compensate=...)``)."""
    weight = devices.read(module, "weight").detach()
    if weight.is_meta:
        raise InputError("compensation needs the model's weights, and this projection has none (meta device): "
                         "compact the model with its weights loaded")
    acc = torch.float32 if weight.device.type == "mps" else torch.float64
    index = index.to(weight.device)
    columns = weight.index_select(0, index).t() if is_conv1d(module) else weight.index_select(1, index)
    held = values.to(device=weight.device, dtype=weight.dtype).index_select(0, index)
    return columns.to(acc) @ held.to(acc)


def add_to_bias(module: nn.Module, delta: torch.Tensor) -> None:
    """``bias += delta`` (summed in ``delta``'s precision, stored in the bias dtype); a
    projection without a bias first gets one of zeros (``ensure_bias``)."""
    ensure_bias(module)
    bias = devices.read(module, "bias").detach()
    value = bias.to(delta.dtype) + delta.to(bias.device)
    devices.write(module, "bias", value.to(bias.dtype))


def ensure_bias(module: nn.Module) -> None:
    """Give a projection without a bias one of zeros (the weight's dtype and device: meta on a
    skeleton; an offloaded module's goes to its offload store), so the module saves and loads
    a ``bias`` tensor."""
    if getattr(module, "bias", None) is not None:
        return
    weight = devices.read(module, "weight")
    zeros = torch.zeros(out_features(module), dtype=weight.dtype, device=weight.device)
    placeholder = zeros.to("meta") if devices.is_offloaded(module) else zeros
    module.bias = nn.Parameter(placeholder, requires_grad=module.weight.requires_grad)
    if devices.is_offloaded(module):
        devices.write(module, "bias", zeros)
