"""Parameters and FLOPs of a model before and after a plan (counted on a meta skeleton)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..sites import HEADS, find_sites
from ..sites.site import in_features, is_conv1d, out_features


def _meta_skeleton(model: nn.Module) -> nn.Module:
    """A same-shaped copy of ``model`` with no storage (parameters on the meta device)."""
    from ..checkpoint import parameters_on_meta

    config = getattr(model, "config", None)
    if config is not None and hasattr(type(model), "config_class"):
        with parameters_on_meta():
            skeleton = type(model)(copy.deepcopy(config))
        from ..compact import applied_plan, compact
        previous = applied_plan(model)
        if previous is not None:
            compact(skeleton, previous)
        return skeleton
    return copy.deepcopy(model).to("meta")


def model_cost(model: nn.Module, seq_len: int = 128) -> tuple[int, int]:
    """(parameters, forward FLOPs per token): every Linear/Conv1D, plus attention scores and
    weighted sums (2 x 2 x seq_len x head_dim per head)."""
    params = sum(p.numel() for p in model.parameters())
    flops = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) or is_conv1d(module):
            flops += 2 * in_features(module) * out_features(module)
    for site in find_sites(model, units=(HEADS,)):
        flops += 4 * seq_len * site.n_units * site.unit_size
    return params, flops


def plan_cost(model: nn.Module, plan, seq_len: int = 128) -> dict:
    """Parameters and FLOPs per token of ``model`` now and after ``compact(model, plan)``."""
    from ..compact import compact

    with torch.no_grad():
        skeleton = _meta_skeleton(model)
        before = model_cost(skeleton, seq_len)
        compact(skeleton, plan)
        after = model_cost(skeleton, seq_len)
    return {"params_before": before[0], "params_after": after[0], "flops_before": before[1],
            "flops_after": after[1], "seq_len": seq_len}
