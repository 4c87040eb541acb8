"""``compact(model, plan)``: rewrite pruned sites into physically smaller dense layers.

FFN site: keep columns of the down projection, rows (and bias entries) of up/gate.
Attention site: keep columns of the output projection, rows of q (kept query heads) and of
k/v (kept KV heads: for grouped-KV models, the groups that still serve a query head), or
the q/k/v row blocks of a fused projection; then the family's ``HeadLayout``
(``attprune/architectures/<family>.py``) updates the per-layer attributes the forward reads
(widths differ by layer) and, where every head went, puts a ``NoHeadAttention`` in the
attention's place.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .. import devices
from ..architectures import HeadLayout, missing_head_layout, spec_for
from ..errors import PlanMismatchError
from ..plan import Plan
from ..sites import FFN, HEADS, Site
from ..sites.site import is_conv1d, out_features
from .slicing import head_features, keep_inputs, keep_outputs

PLAN_ATTRIBUTE = "_attprune_plan"


def _compact_ffn(model: nn.Module, site: Site, kept: torch.Tensor) -> None:
    keep_inputs(site.module(model), kept)
    for producer in site.producers:
        keep_outputs(model.get_submodule(producer), kept)


def kv_heads_of(site: Site, kept: torch.Tensor) -> torch.Tensor:
    """KV heads still read by the kept query heads; every one must serve equally many."""
    per_group = site.n_units // site.n_kv_heads
    groups, counts = torch.unique(kept // per_group, return_counts=True)
    if counts.numel() and not torch.all(counts == counts[0]):
        raise PlanMismatchError(
            f"kept heads of {site.path} leave KV groups serving different numbers of query heads "
            f"({counts.tolist()}); make the plan with attprune.make_plan, which keeps groups even")
    return groups


def _compact_heads(model: nn.Module, site: Site, kept: torch.Tensor, layout: HeadLayout) -> None:
    d = site.unit_size
    if site.fused_qkv:
        (fused,) = site.producers
        width = out_features(model.get_submodule(fused)) // 3
        q = head_features(kept, d)
        keep_outputs(model.get_submodule(fused), torch.cat([q, q + width, q + 2 * width]))
        kv = kept
    else:
        kv = kv_heads_of(site, kept) if site.n_kv_heads < site.n_units else kept
        q_path, *kv_paths = site.producers
        keep_outputs(model.get_submodule(q_path), head_features(kept, d))
        for path in kv_paths:
            keep_outputs(model.get_submodule(path), head_features(kv, d))
    keep_inputs(site.module(model), head_features(kept, d))
    layout.set_heads(model.get_submodule(site.attention), kept.numel(), kv.numel(), d)


def conv1d_to_linear(model: nn.Module, zero_width_only: bool = False) -> nn.Module:
    """Replace GPT-2's ``Conv1D`` modules (in place) by equivalent ``nn.Linear`` ones.

    Compaction needs it where a Conv1D lost its whole input (it reshapes to [-1, 0], which it
    cannot; ``nn.Linear(0, out)`` returns its bias); the ONNX export needs it everywhere (the
    exported reshape of a zero-width Conv1D output reads as "copy this dimension")."""
    for name, module in list(model.named_modules()):
        if is_conv1d(module) and (module.weight.shape[0] == 0 or not zero_width_only):
            # an offloaded Conv1D becomes a plain Linear on its execution device
            device = devices.execution_device(model, name) if devices.is_offloaded(module) else module.weight.device
            with warnings.catch_warnings():  # "initializing zero-element tensors is a no-op"
                warnings.simplefilter("ignore", UserWarning)
                linear = nn.Linear(module.weight.shape[0], module.nf, bias=module.bias is not None, device=device,
                                   dtype=module.weight.dtype)
            linear.weight = nn.Parameter(devices.read(module, "weight").detach().t().contiguous().to(device))
            if module.bias is not None:
                linear.bias = nn.Parameter(devices.read(module, "bias").detach().to(device))
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, linear)
    return model


def _compose(previous: Plan | None, plan: Plan) -> Plan:
    """A plan on an already compacted model, expressed in the original model's indices."""
    if previous is None:
        return plan
    ffn, heads = dict(previous.ffn), dict(previous.heads)
    for target, new in ((ffn, plan.ffn), (heads, plan.heads)):
        for path, kept in new.items():
            target[path] = target[path][kept] if path in target else kept
    sizes = dict(plan.sizes, **previous.sizes)
    return Plan(ffn, heads, sizes, dict(plan.meta, composed_with=previous.meta))


def compact(model: nn.Module, plan: Plan) -> nn.Module:
    """Physically remove the pruned units, in place; returns the model.

    >>> plan = attprune.make_plan(scores, ffn=0.5, heads=0.25)
    >>> model = attprune.compact(model, plan)     # same outputs as attprune.mask(model, plan)
    >>> attprune.save_pretrained(model, "compact/")

    On a dispatched model (``device_map``) every module keeps its device; an offloaded one
    stays offloaded, its sliced weights held in CPU memory (for disk-offloaded modules too:
    ``save_pretrained`` then ``from_pretrained(..., device_map=...)`` puts them back on disk).
    """
    devices.check_offload_layout(model)
    sites = plan.validate(model)
    head_sites = [s for s in sites if s.kind == HEADS]
    spec = spec_for(model)
    layout = spec.heads
    if layout is None:  # a family registered without a head layout: fine while every head stays
        if any(plan.kept(s.path).numel() < s.n_units for s in head_sites):
            raise missing_head_layout(spec)
        head_sites = []
    with torch.no_grad():
        for site in sites:
            if site.kind == FFN:
                _compact_ffn(model, site, plan.kept(site.path))
        for site in head_sites:
            _compact_heads(model, site, plan.kept(site.path), layout)
        if head_sites:
            layout.finalize(model, head_sites, plan.heads)
        for site in head_sites:
            if plan.kept(site.path).numel() == 0:
                layout.remove_all_heads(model, site.attention)
        conv1d_to_linear(model, zero_width_only=True)
    setattr(model, PLAN_ATTRIBUTE, _compose(getattr(model, PLAN_ATTRIBUTE, None), plan))
    return model


def applied_plan(model: nn.Module) -> Plan | None:
    """The plan (in original indices) a model was compacted with, if any."""
    return getattr(model, PLAN_ATTRIBUTE, None)
