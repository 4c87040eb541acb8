"""The shape of every layer of a (compacted) model: what an export format must express."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..sites import FFN, HEADS, find_sites


@dataclass(frozen=True)
class LayerShape:
    """One transformer block: its FFN width, query and key/value heads and head size
    (``None`` where the block has no such site)."""

    block: str
    ffn: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """One ``LayerShape`` per block that holds a site, in execution order.

    >>> [s.ffn for s in layer_shapes(model)]          # e.g. [921, 1536, 640, ...]
    """
    shapes: dict[str, dict] = {}
    for site in find_sites(model):
        entry = shapes.setdefault(site.block, {})
        if site.kind == FFN:
            entry["ffn"] = site.n_units
        elif site.kind == HEADS and "heads" not in entry:  # a block's first attention (T5: self, then cross)
            entry.update(heads=site.n_units, kv_heads=site.n_kv_heads or site.n_units, head_dim=site.unit_size)
    return [LayerShape(block, **entry) for block, entry in shapes.items()]


def head_shapes(model: nn.Module) -> set[tuple[int, int]]:
    """The distinct (query heads, key/value heads) pairs of every attention site (T5's cross-attention too)."""
    return {(s.n_units, s.n_kv_heads or s.n_units) for s in find_sites(model) if s.kind == HEADS}


def ffn_widths(model: nn.Module) -> set[int]:
    return {s.n_units for s in find_sites(model) if s.kind == FFN}
