"""Parameters and FLOPs of a model before and after a plan, counted on an empty skeleton.

``plan_cost`` builds the model's class with its parameters on the meta device
(``devices.empty_model``: no memory), compacts that skeleton with the plan and
counts both: the numbers are those of the model ``compact`` would produce, by construction.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import devices
from ..plan import Plan
from ..sites import HEADS, find_sites
from ..sites.site import in_features, is_conv1d, out_features
from .core import applied_plan, compact


def empty_skeleton(model: nn.Module) -> nn.Module:
    """A same-shaped copy of ``model`` with no storage (parameters on the meta device),
    compacted like ``model`` if it was."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(type(model), "config_class"):
        return copy.deepcopy(model).to("meta")
    skeleton = devices.empty_model(type(model), copy.deepcopy(config))
    previous = applied_plan(model)
    if previous is not None:
        compact(skeleton, previous)
    return skeleton


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


def plan_cost(model: nn.Module, plan: Plan, seq_len: int = 128) -> dict:
    """Parameters and FLOPs per token of ``model`` now and after ``compact(model, plan)``."""
    with torch.no_grad():
        skeleton = empty_skeleton(model)
        before = model_cost(skeleton, seq_len)
        compact(skeleton, plan)
        after = model_cost(skeleton, seq_len)
    return {"params_before": before[0], "params_after": after[0], "flops_before": before[1],
            "flops_after": after[1], "seq_len": seq_len}


def cost_summary(model: nn.Module, plan: Plan, seq_len: int = 128) -> str:
    """Two lines: parameters and FLOPs per token before and after the plan."""
    cost = plan_cost(model, plan, seq_len)
    return "\n".join([
        f"parameters: {cost['params_before']:,} -> {cost['params_after']:,} "
        f"({cost['params_after'] / cost['params_before']:.1%})",
        f"FLOPs per token at seq {seq_len}: {cost['flops_before']:,} -> {cost['flops_after']:,} "
        f"({cost['flops_after'] / cost['flops_before']:.1%}; ideal speedup "
        f"{cost['flops_before'] / max(cost['flops_after'], 1):.2f}x)"])
