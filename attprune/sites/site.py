"""A *site*: a projection whose input features are the prunable units.

FFN site: the FFN output (down) projection; one unit per intermediate neuron.
Attention site: the attention output projection; one unit per query head, ``head_dim``
consecutive input features each.  Every later stage (attribution, plans, masking,
compaction) speaks in sites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

FFN = "ffn"
HEADS = "heads"
UNIT_KINDS = (FFN, HEADS)


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` stores its weight as [in, out] (the transpose of ``nn.Linear``)."""
    return type(module).__name__ == "Conv1D"


def in_features(module: nn.Module) -> int:
    if is_conv1d(module):
        return module.weight.shape[0]
    if isinstance(module, nn.Linear):
        return module.in_features
    raise TypeError(f"{type(module).__name__} is not a Linear or Conv1D projection")


def out_features(module: nn.Module) -> int:
    if is_conv1d(module):
        return module.weight.shape[1]
    if isinstance(module, nn.Linear):
        return module.out_features
    raise TypeError(f"{type(module).__name__} is not a Linear or Conv1D projection")


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The projection's weight as an [out, in] view, whatever its storage layout."""
    return module.weight.t() if is_conv1d(module) else module.weight


@dataclass(frozen=True)
class Site:
    """One prunable site of a model.

    Attributes:
        path: module path of the projection (as in ``model.named_modules()``).
        kind: ``"ffn"`` or ``"heads"``.
        block: path of the transformer block that holds it.
        stream: ``"input"`` (tokens of ``input_ids``) or ``"decoder"`` (tokens of the
            decoder of an encoder-decoder model): which padding mask applies to it.
        n_units: number of units (neurons or query heads).
        unit_size: input features per unit (1 for neurons, ``head_dim`` for heads).
        producers: paths of the projections whose output rows make the units
            (FFN: up/gate; attention: q, k, v, or the fused qkv projection).
        attention: path of the attention module (heads only).
        n_kv_heads: key/value heads (heads only; < n_units for grouped-KV models).
        fused_qkv: the producer is one fused q|k|v projection (GPT-2's ``c_attn``).
    """

    path: str
    kind: str
    block: str
    stream: str
    n_units: int
    unit_size: int
    producers: tuple[str, ...] = field(default_factory=tuple)
    attention: str | None = None
    n_kv_heads: int | None = None
    fused_qkv: bool = False

    @property
    def n_features(self) -> int:
        return self.n_units * self.unit_size

    def module(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.path)
