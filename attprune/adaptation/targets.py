"""What adapting by pruning masks, and how a mask reaches the weight it gates.

``granularity="weights"``: one mask entry per weight of every Linear (and GPT-2 Conv1D) of
the encoder, optionally of the embeddings too; the pooler (unused by the task head) is left
out.  ``granularity="units"``: one entry per FFN neuron and attention head (attprune's
sites), applied to the site projection's input columns, which is what ``attprune.mask``
does to a plan's pruned units, so the learned units become a ``Plan`` that ``compact``
turns into a smaller model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..sites import HEADS, find_sites
from ..sites.site import is_conv1d

GRANULARITIES = ("weights", "units")
SKIPPED_PREFIXES = ("pooler.",)


@dataclass(frozen=True)
class MaskTarget:
    """One masked tensor: ``param`` (a weight of the encoder) and the mask's own shape.

    Units targets hold one entry per unit; ``expand`` turns it into a mask that
    broadcasts over the weight (each unit gates its ``unit_size`` input columns).
    """

    param: str
    shape: tuple[int, ...]
    kind: str = "weight"  # "weight", "ffn" or "heads"
    unit_size: int = 1
    conv1d: bool = False  # GPT-2 Conv1D stores its weight as [in, out]

    def expand(self, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "weight":
            return mask
        features = mask.repeat_interleave(self.unit_size) if self.unit_size > 1 else mask
        return features[:, None] if self.conv1d else features[None, :]


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")


def check_embeddings(granularity: str, embeddings: bool) -> None:
    """Embedding tables are masked weight by weight only."""
    if embeddings and granularity == "units":
        raise InputError("embeddings are masked only with granularity='weights' (units are FFN neurons and "
                         "attention heads)")


def _is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def mask_targets(encoder: nn.Module, granularity: str, embeddings: bool = False) -> list[MaskTarget]:
    """The tensors ``adapt`` learns masks for, in a fixed order.

    >>> [t.param for t in mask_targets(model.base_model, "weights")][:2]
    ['encoder.layer.0.attention.self.query.weight', 'encoder.layer.0.attention.self.key.weight']
    """
    check_granularity(granularity)
    check_embeddings(granularity, embeddings)
    return _unit_targets(encoder) if granularity == "units" else _weight_targets(encoder, embeddings)


def _unit_targets(encoder: nn.Module) -> list[MaskTarget]:
    targets = []
    for site in find_sites(encoder):
        module = site.module(encoder)
        if site.kind == HEADS and site.n_kv_heads is not None and site.n_kv_heads < site.n_units:
            raise InputError(f"{site.path}: granularity='units' does not support grouped-KV attention yet; "
                             "use granularity='weights'")
        targets.append(MaskTarget(f"{site.path}.weight", (site.n_units,), site.kind, site.unit_size,
                                  is_conv1d(module)))
    return targets


def _weight_targets(encoder: nn.Module, embeddings: bool) -> list[MaskTarget]:
    targets = []
    for name, module in encoder.named_modules():
        if name.startswith(SKIPPED_PREFIXES):
            continue
        if _is_projection(module) or (embeddings and isinstance(module, nn.Embedding)):
            targets.append(MaskTarget(f"{name}.weight", tuple(module.weight.shape)))
    if not targets:
        raise InputError(f"{type(encoder).__name__} has no Linear layers to mask")
    return targets


def masked_weights(encoder: nn.Module, targets: list[MaskTarget],
                   masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{param: pre-trained weight x expanded mask}: the weights the task model runs with.

    Kept weights are multiplied by exactly 1, so they stay bit-identical to the pre-trained ones.
    """
    params = dict(encoder.named_parameters())
    out = {}
    for target in targets:
        weight = params[target.param].detach()
        out[target.param] = weight * target.expand(masks[target.param]).to(weight.dtype)
    return out
