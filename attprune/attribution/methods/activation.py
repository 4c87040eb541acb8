"""``activation``: the mean |input| of each unit's features, reduced over real tokens (no gradient);
with ``positions``, over the chosen tokens."""

from __future__ import annotations

from typing import Iterator

import torch

from ..runner import Clean, Runner
from ...ops.reference import per_unit, reduce_tokens
from .base import Method, register_method


@register_method
class Activation(Method):
    """|X| averaged over a unit's features: the strong data-driven baseline that needs no backward."""

    name = "activation"
    takes_positions = True  # the reduction

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        for site in runner.sites:
            x = clean.site_inputs[site.path].to(runner.acc_dtype).abs()
            yield site.path, reduce_tokens(per_unit(x, site.unit_size) / site.unit_size,
                                           runner.token_mask(clean, site), self.config.reduce_tokens)
