"""Scores that need no data: weight magnitude and seeded random."""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from ..sites import Site, weight_out_in


def magnitude(model: nn.Module, site: Site) -> torch.Tensor:
    """L2 norm of each unit's columns of the site projection (a head: its head_dim columns)."""
    with devices.materialized(site.module(model)) as projection:
        weight = weight_out_in(projection).detach().float()
    return weight.view(weight.shape[0], site.n_units, site.unit_size).square().sum((0, 2)).sqrt()


def random(site: Site, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) scores from a seeded generator (drawn site by site, in site order)."""
    return torch.rand(site.n_units, generator=generator)
