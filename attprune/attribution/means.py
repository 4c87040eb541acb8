"""The mean input of every site over a task's data: one forward pass per batch, no gradient.

Per site it is the mean, over the real tokens of every example, of the site projection's
input features, i.e. of every unit's activation.  It is where IG's path starts with
``baseline="mean"`` (a unit moved from its average over the data to its value on the
example, rather than from 0), and what compaction folds into the projection's bias when it
compensates the removed units (``attprune.compact(model, plan, compensate=means)``: a removed
unit's average contribution is kept).

>>> means = attprune.input_means(model, batches)                 # {site path: [input features]}
>>> attprune.compact(model, plan, compensate=means)
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..sites import UNIT_KINDS, Site, find_sites
from .inputs import check_batch
from .runner import Runner, attribution_mode
from .tokens import token_mask


@torch.no_grad()
def input_means(model: nn.Module, batches: Iterable[dict], *, units: tuple[str, ...] = UNIT_KINDS,
                sites: list[Site] | None = None, progress: bool = False,
                long_inputs: str = "truncate") -> dict[str, torch.Tensor]:
    """Site path -> the mean of its input features over the real tokens of ``batches``
    (float32; float64 for a float64 model)."""
    sites = find_sites(model, units) if sites is None else sites
    runner = Runner(model, sites, "label", dtype=None, replay_sites=False)
    sums = {s.path: None for s in sites}
    tokens = dict.fromkeys(sums, 0)
    with attribution_mode(model):
        for batch in tqdm(batches, desc="input means", disable=not progress):
            _, inputs, labels = runner._split(check_batch(model, batch, long_inputs))
            inputs, labels = runner._decoder_inputs(inputs, labels)
            seen: dict[str, torch.Tensor] = {}
            rows = inputs["input_ids"].shape[0] if "input_ids" in inputs else inputs["inputs_embeds"].shape[0]
            hooks = [model.get_submodule(s.path).register_forward_hook(_keep(runner, s, rows, seen)) for s in sites]
            try:
                runner.forward(inputs)
            finally:
                for h in hooks:
                    h.remove()
            for site in sites:
                x = seen[site.path]
                real = token_mask(dict(inputs, labels=labels), site.stream, x.shape[1], rows).to(x.device)
                total = (x.to(runner.acc_dtype) * real[..., None]).sum((0, 1)).cpu()
                sums[site.path] = total if sums[site.path] is None else sums[site.path] + total
                tokens[site.path] += int(real.sum())
    if not any(tokens.values()):
        raise InputError("no examples: `batches` yielded nothing")
    return {p: sums[p] / max(tokens[p], 1) for p in sums}


def _keep(runner: Runner, site: Site, rows: int, seen: dict):
    def hook(module, args, output):
        seen[site.path] = runner.by_token(site, args[0].detach(), rows)
    return hook
