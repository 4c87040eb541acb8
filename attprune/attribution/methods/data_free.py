"""Scores that need no data: weight magnitude and seeded random."""

from __future__ import annotations

import torch
from accelerate.utils import align_module_device
from torch import nn

from ...sites import Site, weight_out_in
from .base import Method, register_method


@register_method
class Magnitude(Method):
    """L2 norm of each unit's columns of the site projection (a head: its head_dim columns)."""

    name = "magnitude"
    needs_data = False

    def score_without_data(self, model: nn.Module, sites: list[Site]) -> dict[str, torch.Tensor]:
        return {site.path: magnitude(model, site) for site in sites}


@register_method
class Random(Method):
    """Uniform [0, 1) scores from ``seed`` (drawn site by site, in site order)."""

    name = "random"
    needs_data = False

    def score_without_data(self, model: nn.Module, sites: list[Site]) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.config.seed)
        return {site.path: torch.rand(site.n_units, generator=generator) for site in sites}


def magnitude(model: nn.Module, site: Site) -> torch.Tensor:
    projection = site.module(model)
    with align_module_device(projection):
        weight = weight_out_in(projection).detach().float()
    return weight.view(weight.shape[0], site.n_units, site.unit_size).square().sum((0, 2)).sqrt()
