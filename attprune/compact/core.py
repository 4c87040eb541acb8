"""``compact(model, plan)``: rewrite pruned sites into physically smaller dense layers.

FFN site: keep columns of the down projection, rows (and bias entries) of up/gate.
Attention site: keep columns of the output projection, rows of q (kept query heads) and of
k/v (kept KV heads: for grouped-KV models, the groups that still serve a query head), or
the q/k/v row blocks of a fused projection; then the family's ``HeadLayout``
(``attprune/architectures/<family>.py``) updates the per-layer attributes the forward reads
(widths differ by layer) and, where every head went, puts a ``NoHeadAttention`` in the
attention's place.

Compensation (``compensate=means``, FLAP's bias compensation): a removed input feature of a
site is held at its mean over some data instead of 0, i.e. ``b += W[:, removed] @
mean[removed]`` (a projection without a bias gets one).  The applied plan lists those sites in
``meta["compensated"]``, so a skeleton compacted with it (``from_pretrained``) has the bias
parameters the checkpoint fills.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .. import devices
from ..architectures import HeadLayout, missing_head_layout, spec_for
from ..errors import InputError, PlanMismatchError
from ..plan import Plan
from ..sites import FFN, HEADS, Site
from ..sites.site import is_conv1d, out_features
from .slicing import (add_to_bias, ensure_bias, head_features, input_contribution, keep_inputs, keep_outputs,
                      removed_features)

PLAN_ATTRIBUTE = "_attprune_plan"
#: ``Plan.meta`` key: the site paths whose projection carries a compensation bias
COMPENSATED = "compensated"
_MEANS_HINT = ("compute them on this model's task data: attprune.input_means(model, batches), or the scores' own "
               "(scores.input_means: attribution with baseline='mean', or `attprune score`, stores them)")


def compensation_means(sites: list[Site], plan: Plan, compensate) -> dict[str, torch.Tensor]:
    """Site path -> mean input [n_features] for every site where ``plan`` removes units (a site
    that keeps every unit needs none); ``InputError`` naming the site whose mean is missing or
    of the wrong shape.  ``compensate``: {site path: mean input}, or scores holding
    ``input_means``; None: {}."""
    if compensate is None:
        return {}
    if not isinstance(compensate, Mapping):
        means = getattr(compensate, "input_means", None)
        if means is None and hasattr(compensate, "input_means"):
            raise InputError(f"compensate: these scores carry no input means; {_MEANS_HINT}")
        if not isinstance(means, Mapping):
            raise InputError(f"compensate must be {{site path: mean input}} (or scores with input_means), got "
                             f"{type(compensate).__name__}")
        compensate = means
    found = {}
    for site in sites:
        if plan.kept(site.path).numel() == site.n_units:
            continue
        mean = compensate.get(site.path)
        if mean is None:
            raise InputError(f"compensate has no mean input for site {site.path}, where the plan removes units; "
                             f"{_MEANS_HINT}")
        mean = torch.as_tensor(mean)
        if mean.shape != (site.n_features,) or not mean.is_floating_point():
            raise InputError(f"compensate[{site.path!r}] must be a float vector of the site's {site.n_features} input "
                             f"features ({site.n_units} units x {site.unit_size}), got {mean.dtype} of shape "
                             f"{tuple(mean.shape)}: means of another model, or of this one before an earlier "
                             "compaction?")
        if not torch.isfinite(mean).all():
            raise InputError(f"compensate[{site.path!r}] holds NaN or infinite values")
        found[site.path] = mean
    return found


def _compensations(model: nn.Module, sites: list[Site], plan: Plan, means: dict) -> dict[str, torch.Tensor]:
    """Site path -> what its removed features, held at their means, add to its outputs (read
    before any weight is sliced)."""
    folds = {}
    for site in sites:
        if site.path in means:
            kept = head_features(plan.kept(site.path), site.unit_size)
            removed = removed_features(site.n_features, kept)
            folds[site.path] = input_contribution(site.module(model), removed, means[site.path])
    return folds


def _bias_placeholders(model: nn.Module, plan: Plan, compensate) -> list[str]:
    """The compensated sites a plan lists (``meta["compensated"]``), to be given bias
    parameters when compacting a skeleton without means (``from_pretrained``)."""
    listed = list(plan.meta.get(COMPENSATED, ())) if compensate is None else []
    for path in listed:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise PlanMismatchError(f"the plan lists a compensation bias on {path}, which {type(model).__name__} does "
                                    "not have; was the plan made for another model?") from None
        if not devices.read(module, "weight").is_meta:
            raise InputError(f"this plan was applied with compensation (plan.meta['compensated'] lists {path}): "
                             "to compact a model that has its weights, pass compensate= the means (or drop "
                             "plan.meta['compensated'] to compact without)")
    return listed


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
    """A plan on an already compacted model, expressed in the original model's indices (the
    compensated sites of both)."""
    if previous is None:
        return plan
    ffn, heads = dict(previous.ffn), dict(previous.heads)
    for target, new in ((ffn, plan.ffn), (heads, plan.heads)):
        for path, kept in new.items():
            target[path] = target[path][kept] if path in target else kept
    sizes = dict(plan.sizes, **previous.sizes)
    meta = dict(plan.meta, composed_with=previous.meta)
    compensated = sorted({*previous.meta.get(COMPENSATED, ()), *plan.meta.get(COMPENSATED, ())})
    if compensated:
        meta[COMPENSATED] = compensated
    return Plan(ffn, heads, sizes, meta)


def _recorded(plan: Plan, compensated: list[str] | None) -> Plan:
    """The plan as applied: ``meta["compensated"]`` lists the sites given a compensation bias
    (None: compacted without means, the plan's own list stands); the caller's plan is not changed."""
    if compensated is None:
        return plan
    meta = {k: v for k, v in plan.meta.items() if k != COMPENSATED}
    if compensated:
        meta[COMPENSATED] = compensated
    return Plan(dict(plan.ffn), dict(plan.heads), dict(plan.sizes), meta)


def compact(model: nn.Module, plan: Plan, *, compensate=None) -> nn.Module:
    """Physically remove the pruned units, in place; returns the model.

    >>> plan = attprune.make_plan(scores, ffn=0.5, heads=0.25)
    >>> model = attprune.compact(model, plan)     # same outputs as attprune.mask(model, plan)
    >>> attprune.save_pretrained(model, "compact/")

    ``compensate``: {site path: mean input [features]} (``attprune.input_means(model, batches)``,
    or scores whose ``input_means`` are set): every removed feature's mean contribution is folded
    into its projection's bias, ``b += W[:, removed] @ mean[removed]`` (a projection without a
    bias gets one), so the compacted model equals ``attprune.mask(model, plan, compensate=means)``
    and its mean site outputs over that data stay the dense model's.  Sites that keep every unit
    are untouched; the applied plan lists the others in ``meta["compensated"]`` (checkpoints
    reload with their biases).

    >>> means = attprune.input_means(model, batches)
    >>> attprune.compact(model, plan, compensate=means)

    On a dispatched model (``device_map``) every module keeps its device; an offloaded one
    stays offloaded, its sliced weights held in CPU memory (for disk-offloaded modules too:
    ``save_pretrained`` then ``from_pretrained(..., device_map=...)`` puts them back on disk).
    """
    devices.check_offload_layout(model)
    sites = plan.validate(model)
    means = compensation_means(sites, plan, compensate)
    placeholders = _bias_placeholders(model, plan, compensate)
    head_sites = [s for s in sites if s.kind == HEADS]
    spec = spec_for(model)
    layout = spec.heads
    if layout is None:  # a family registered without a head layout: fine while every head stays
        if any(plan.kept(s.path).numel() < s.n_units for s in head_sites):
            raise missing_head_layout(spec)
        head_sites = []
    with torch.no_grad():
        folds = _compensations(model, sites, plan, means)
        for site in sites:
            if site.kind == FFN:
                _compact_ffn(model, site, plan.kept(site.path))
        for site in head_sites:
            _compact_heads(model, site, plan.kept(site.path), layout)
        for path, fold in folds.items():
            add_to_bias(model.get_submodule(path), fold)
        for path in placeholders:
            ensure_bias(model.get_submodule(path))
        if head_sites:
            layout.finalize(model, head_sites, plan.heads)
        for site in head_sites:
            if plan.kept(site.path).numel() == 0:
                layout.remove_all_heads(model, site.attention)
        conv1d_to_linear(model, zero_width_only=True)
    applied = _recorded(plan, None if compensate is None else sorted(folds))
    setattr(model, PLAN_ATTRIBUTE, _compose(getattr(model, PLAN_ATTRIBUTE, None), applied))
    return model


def applied_plan(model: nn.Module) -> Plan | None:
    """The plan (in original indices) a model was compacted with, if any."""
    return getattr(model, PLAN_ATTRIBUTE, None)
