"""Baselines for adapting by pruning: the same head, the evaluated encoder at pre-trained values.

* ``fit_head``: train the head on the frozen (optionally masked) pre-trained encoder; with
  no mask this is **feature extraction**.  Features are computed once, then the head trains.
* ``fine_tune``: encoder and head trained (the upper reference; the encoder changes).
* ``random_masks`` / ``magnitude_masks``: one-shot masks from a seed / the largest |w0|.
* ``imp_masks``: iterative magnitude pruning (Chen et al. 2020, lottery tickets in BERT):
  fine-tune, remove ``rate`` of the remaining weights with the smallest fine-tuned |w|,
  rewind to the pre-trained values, repeat.
* ``gmp_masks``: gradual magnitude pruning (Zhu & Gupta 2017) during one fine-tuning, the
  sparsity following the cubic schedule s_t = s_f (1 - (1 - progress)^3).

Every mask is global over the encoder's Linear weights (as ``adapt(granularity="weights")``)
and is evaluated with ``fit_head``: masked pre-trained weights, a trained head.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..batches import IGNORE_INDEX
from ..errors import InputError
from .config import AdaptConfig, check_sparsity
from .estimator import keep_top
from .head import LayerWeightedHead, train_head
from .model import AdaptedModel, encoder_features, encoder_of, frozen_features
from .targets import MaskTarget, mask_targets
from .train import Adapted, check_batches, infer_num_labels, seeded_head

Masks = dict[str, torch.Tensor]


def _new_head(model: nn.Module, batches: list[dict], head: str, seed: int) -> LayerWeightedHead:
    return seeded_head(encoder_of(model), infer_num_labels(model, batches), head, seed)


def fit_head(model: nn.Module, train_batches, masks: Masks | None = None, *, head: str = "layer-weighted-mlp",
             epochs: int = 3, lr: float = 2e-5, seed: int = 0, method: str = "feature extraction") -> Adapted:
    """The task model of a fixed mask (or none: feature extraction): only the head trains.

    >>> fe = fit_head(model, batches, epochs=3, lr=1e-3)                  # feature extraction
    >>> rnd = fit_head(model, batches, random_masks(model, 0.9), method="random")

    The result's ``config`` records the head's training and the mask's sparsity, with
    ``lr_mask=0`` and ``decay=0`` (the mask is given, not learned); ``stats["method"]``
    names the baseline.
    """
    batches = check_batches(train_batches)
    encoder = encoder_of(model)
    targets = mask_targets(encoder, "weights") if masks is not None else []
    masks = masks or {}
    kept, total = sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    if total and not kept:
        raise InputError("the masks keep no weight at all; a task model needs at least one")
    sparsity = 1 - kept / total if total else 0.0
    config = AdaptConfig(sparsity=sparsity, head=head, epochs=epochs, lr_mask=0.0, lr_head=lr, decay=0.0, seed=seed)
    task_head = _new_head(model, batches, head, seed)
    features, labels = frozen_features(encoder, targets, masks, batches)
    train_head(task_head, features, labels, epochs=epochs, lr=lr, seed=seed)
    stats = {"method": method, "sparsity": round(sparsity, 6), "kept": kept, "masked": total}
    return Adapted(config, task_head, targets, masks, None, stats)


def random_masks(model: nn.Module, sparsity: float, seed: int = 0) -> Masks:
    """Keep a uniformly random (1 - sparsity) share of the encoder's Linear weights."""
    check_sparsity(sparsity)
    generator = torch.Generator().manual_seed(seed)
    targets = mask_targets(encoder_of(model), "weights")
    return keep_top({t.param: torch.rand(t.shape, generator=generator) for t in targets}, sparsity)


def magnitude_masks(model: nn.Module, sparsity: float) -> Masks:
    """Keep the (1 - sparsity) share of the encoder's Linear weights with the largest |w| (global)."""
    check_sparsity(sparsity)
    return _magnitude(encoder_of(model), mask_targets(encoder_of(model), "weights"), sparsity)


def _magnitude(encoder: nn.Module, targets: list[MaskTarget], sparsity: float,
               among: Masks | None = None) -> Masks:
    params = dict(encoder.named_parameters())
    values = {}
    for t in targets:
        magnitude = params[t.param].detach().abs().float()
        values[t.param] = magnitude if among is None else magnitude.masked_fill(~among[t.param], -1.0)
    return keep_top(values, sparsity)


@torch.no_grad()
def _apply(encoder: nn.Module, masks: Masks) -> None:
    params = dict(encoder.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def fine_tune(model: nn.Module, train_batches, *, epochs: int = 3, lr: float = 2e-5, lr_head: float = 2e-5,
              head: str = "layer-weighted-mlp", seed: int = 0, masks: Masks | None = None,
              on_step: Callable[[int, nn.Module], Masks | None] | None = None,
              progress: bool = False, desc: str = "fine-tune") -> AdaptedModel:
    """Fine-tune a copy of the encoder with the head (``model`` is not modified).

    ``masks``: weights held at zero throughout (IMP rounds).  ``on_step(step, encoder)``:
    called after every update; a returned mask replaces ``masks`` (GMP's schedule).
    """
    batches = check_batches(train_batches)
    encoder = copy.deepcopy(encoder_of(model)).train()
    for p in encoder.parameters():
        p.requires_grad_(True)
    task_head = _new_head(model, batches, head, seed)
    optimizer = torch.optim.AdamW([{"params": encoder.parameters(), "lr": lr},
                                   {"params": task_head.parameters(), "lr": lr_head}], weight_decay=0.0)
    if masks:
        _apply(encoder, masks)
    step = 0
    for _ in tqdm(range(epochs), desc=desc, disable=not progress):
        for batch in batches:
            loss = F.cross_entropy(task_head(encoder_features(encoder, None, batch)), batch["labels"],
                                   ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if on_step is not None:
                masks = on_step(step, encoder) or masks
            if masks:
                _apply(encoder, masks)
    encoder.eval()
    return AdaptedModel(encoder, task_head.eval(), [], {})


def imp_levels(sparsities, rate: float = 0.2) -> list[float]:
    """The sparsity after each IMP round: remove ``rate`` of what is left, stopping at each target.

    >>> imp_levels([0.5], 0.2)
    [0.2, 0.36, 0.488, 0.5]
    """
    levels, current = [], 0.0
    for target in sorted(sparsities):
        check_sparsity(target)
        while current < target - 1e-9:
            current = min(round(1 - (1 - current) * (1 - rate), 9), target)
            levels.append(current)
    return levels


def imp_masks(model: nn.Module, train_batches, sparsities, *, rate: float = 0.2, epochs_per_round: int = 1,
              lr: float = 2e-5, lr_head: float = 2e-5, head: str = "layer-weighted-mlp", seed: int = 0,
              progress: bool = True) -> dict[float, Masks]:
    """Iterative magnitude pruning with rewinding: {target sparsity: mask}.

    Each round fine-tunes from the pre-trained weights under the current mask, then removes
    ``rate`` of the remaining weights with the smallest fine-tuned |w| (global), never
    passing the next target.
    """
    batches = check_batches(train_batches)
    encoder = encoder_of(model)
    targets = mask_targets(encoder, "weights")
    masks = {t.param: torch.ones(t.shape, dtype=torch.bool) for t in targets}
    wanted = {round(s, 9) for s in sparsities}
    found = {}
    levels = imp_levels(sparsities, rate)
    for level in tqdm(levels, desc="IMP rounds", disable=not progress):
        tuned = fine_tune(model, batches, epochs=epochs_per_round, lr=lr, lr_head=lr_head, head=head, seed=seed,
                          masks=masks)
        masks = _magnitude(tuned.encoder, targets, level, among=masks)
        if round(level, 9) in wanted:
            found[level] = masks
    return {s: found[round(s, 9)] for s in sparsities}


def gmp_sparsity(step: int, final: float, start: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule: 0 before ``start``, ``final`` from ``end`` on.

    >>> round(gmp_sparsity(5, 0.8, 0, 10), 6)
    0.7
    """
    if step <= start:
        return 0.0
    if step >= end:
        return final
    return final * (1 - (1 - (step - start) / (end - start)) ** 3)


def gmp_masks(model: nn.Module, train_batches, sparsity: float, *, epochs: int = 3, lr: float = 2e-5,
              lr_head: float = 2e-5, head: str = "layer-weighted-mlp", seed: int = 0, end: float = 0.75,
              updates: int = 10, progress: bool = False) -> Masks:
    """Gradual magnitude pruning during one fine-tuning; the final mask (for pre-trained weights).

    The sparsity rises on the cubic schedule from 0 to ``sparsity`` over the first ``end``
    share of the steps, re-pruned by current |w| ``updates`` times; the rest fine-tunes.
    """
    check_sparsity(sparsity)
    batches = check_batches(train_batches)
    targets = mask_targets(encoder_of(model), "weights")
    total = epochs * len(batches)
    end_step = max(1, round(end * total))
    every = max(1, end_step // updates)
    current: dict[str, Masks] = {}

    def on_step(step: int, encoder: nn.Module) -> Masks | None:
        if step > end_step or (step % every and step != end_step):
            return None  # after end_step the mask stays as it is
        current["masks"] = _magnitude(encoder, targets, gmp_sparsity(step, sparsity, 0, end_step))
        return current["masks"]

    fine_tune(model, batches, epochs=epochs, lr=lr, lr_head=lr_head, head=head, seed=seed, on_step=on_step,
              progress=progress, desc=f"GMP {sparsity:.0%}")
    return current["masks"]
