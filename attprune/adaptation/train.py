"""``adapt``: learn a task as a mask over frozen pre-trained weights, plus a small head.

Each step: the masked encoder (weights x tempered_sigmoid(theta)) and the head run on a
batch; theta takes an Adam step of size ``lr_mask`` (the paper's 2e-5 is BERT's Adam rate),
then every theta is pushed down by ``decay``; the head takes an Adam step of ``lr_head``.
Training stops once the fraction of negative theta reaches ``sparsity`` (or after
``epochs``); the final mask keeps exactly the (1 - sparsity) share with the largest theta,
which is theta > 0 at the stop up to the last step's overshoot.  When the initial theta
already has more than ``sparsity`` negative (with N(0.01, 0.001) about 38% are), the rule
cannot fire and all epochs run.

The settings are one ``AdaptConfig``; ``Adapted.config`` is that object exactly as given
(so it reruns the same way), and what it resolved to is recorded beside it:
``stats["decay"]`` is the per-step push actually used (the number ``decay="auto"`` came to,
or the given number), ``head.num_labels`` the classes (``num_labels=None``: inferred).

Memory: theta is one float32 per masked weight plus Adam's two moments: 3x the masked
weights in float32 (all-MiniLM-L6-v2: 10.6 M masked weights -> 127 MB), on top of the
frozen model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..batches import IGNORE_INDEX
from ..data import accuracy
from ..errors import InputError
from ..plan import Plan
from ..sites import FFN, HEADS
from .config import AdaptConfig
from .estimator import MaskScores, keep_top
from .head import LayerWeightedHead, new_head
from .model import AdaptedModel, encoder_features, encoder_of, hidden_size, n_layers
from .store import fingerprint, save_adapted
from .targets import MaskTarget, mask_targets, masked_weights


@dataclass
class Adapted:
    """What ``adapt`` learned: the head, boolean masks per target, and (units) the plan,
    with the ``AdaptConfig`` it was learned with.

    >>> result = attprune.adapt(model, batches, sparsity=0.5)
    >>> result.save("adapted/mr"); task_model = result.model(model)
    """

    config: AdaptConfig
    head: LayerWeightedHead
    targets: list[MaskTarget]
    masks: dict[str, torch.Tensor]
    plan: Plan | None = None
    stats: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def granularity(self) -> str:
        return self.config.granularity

    def model(self, pretrained: nn.Module) -> AdaptedModel:
        """The task model on top of ``pretrained`` (shared, never modified)."""
        return AdaptedModel(encoder_of(pretrained), self.head, self.targets, self.masks, self.plan)

    def save(self, path: str | Path, tokenizer=None) -> Path:
        """Write the head, the masks (bit-packed, or the plan), the config and statistics
        (one JSON file) and optionally the tokenizer (``path/tokenizer``), all at once; see
        ``apply_adapted`` and ``AdaptConfig.from_pretrained``."""
        return save_adapted(self, path, tokenizer)


def check_batches(batches: Iterable[dict] | None, name: str = "train_batches") -> list[dict]:
    """The batches as a list; each needs ``input_ids`` and one class id per example in ``labels``."""
    batches = list(batches) if batches is not None else []
    if not batches:
        raise InputError(f"{name} is empty: adapting needs labelled batches")
    for batch in batches:
        if "labels" not in batch or "input_ids" not in batch:
            raise InputError(f"every batch of {name} needs input_ids and labels (one class id per example); "
                             f"got keys {sorted(batch)}")
        if batch["labels"].dim() != 1:
            raise InputError(f"{name}: labels must be one class id per example (sequence classification), "
                             f"got shape {tuple(batch['labels'].shape)}")
    return batches


def infer_num_labels(model: nn.Module, batches: list[dict]) -> int:
    """Classes of the task: the largest label + 1 (at least 2), or a classifier's own count if larger."""
    labels = torch.cat([b["labels"] for b in batches])
    labels = labels[labels != IGNORE_INDEX]
    if labels.numel() and labels.min() < 0:
        raise InputError(f"labels must be class ids >= 0, found {int(labels.min())}")
    seen = int(labels.max()) + 1 if labels.numel() else 2
    is_classifier = type(model).__name__.endswith("ForSequenceClassification")
    configured = getattr(model.config, "num_labels", 0) if is_classifier else 0
    return max(seen, configured, 2)


def seeded_head(encoder: nn.Module, num_labels: int, kind: str, seed: int) -> LayerWeightedHead:
    """A new head of ``kind``, initialised under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return new_head(encoder, num_labels, kind, n_layers(encoder), hidden_size(encoder))


def auto_decay(sparsity: float, total_steps: int, init_mean: float, init_std: float) -> float:
    """The constant push that alone would move the initial theta's ``sparsity``-quantile to 0
    by the last step, so that a short run reaches the target near its end (0 when the
    initial theta already has that share negative)."""
    quantile = init_mean + init_std * float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(sparsity)))
    return max(quantile, 0.0) / max(total_steps, 1)


def resolve_decay(config: AdaptConfig, steps_per_epoch: int) -> float:
    """The per-step push ``config`` asks for: its ``decay``, or for ``"auto"`` ``auto_decay``'s
    over ``epochs * steps_per_epoch`` steps.

    >>> resolve_decay(AdaptConfig(decay=1e-6), 10)
    1e-06
    """
    if config.decay == "auto":
        return auto_decay(config.sparsity, config.epochs * steps_per_epoch, config.init_mean, config.init_std)
    return float(config.decay)


def magnitude_order(encoder: nn.Module, targets: list[MaskTarget]) -> dict[str, torch.Tensor]:
    """|w| per masked weight (units: the L2 norm of each unit's input columns)."""
    params = dict(encoder.named_parameters())
    order = {}
    for t in targets:
        w = params[t.param].detach().float()
        if t.kind == "weight":
            order[t.param] = w.abs()
        else:
            columns = w if t.conv1d else w.t()  # [in, out]
            order[t.param] = columns.reshape(t.shape[0], -1).norm(dim=1)
    return order


def _unit_fractions(thetas: MaskScores, targets: list[MaskTarget]) -> dict[str, float]:
    negative, total = {FFN: 0, HEADS: 0}, {FFN: 0, HEADS: 0}
    for target, (_, theta) in zip(targets, thetas.items()):
        negative[target.kind] += int((theta < 0).sum())
        total[target.kind] += theta.numel()
    return {k: negative[k] / total[k] for k in total if total[k]}


def _final_masks(thetas: MaskScores, targets: list[MaskTarget], granularity: str,
                 sparsity: float) -> dict[str, torch.Tensor]:
    if granularity == "weights":
        return thetas.keep_top(sparsity)
    masks = {}
    for kind in (FFN, HEADS):  # each unit kind reaches the sparsity on its own
        of_kind = {t.param: theta.detach() for t, (_, theta) in zip(targets, thetas.items()) if t.kind == kind}
        if of_kind:
            masks.update(keep_top(of_kind, sparsity))
    return masks


def plan_from_unit_masks(targets: list[MaskTarget], masks: dict[str, torch.Tensor], meta: dict) -> Plan:
    """The ``Plan`` that keeps the units whose mask entry is True."""
    kept = {FFN: {}, HEADS: {}}
    sizes = {}
    for target in targets:
        site = target.param.removesuffix(".weight")
        kept[target.kind][site] = masks[target.param].nonzero().flatten()
        sizes[site] = target.shape[0]
    return Plan(kept[FFN], kept[HEADS], sizes, meta)


class MaskTrainer:
    """The state of one run: theta, the head and their optimisers; ``step(batch)`` is one update.

    >>> trainer = MaskTrainer(encoder, mask_targets(encoder, "weights"), head, lr_mask=2e-5, lr_head=2e-5)
    >>> loss = trainer.step(batch)
    """

    def __init__(self, encoder: nn.Module, targets: list[MaskTarget], head: LayerWeightedHead, *,
                 lr_mask: float, lr_head: float, decay: float = 0.0, t_forward: float = 1e5,
                 t_backward: float = 1.0, init_mean: float = 0.01, init_std: float = 0.001 ** 0.5, seed: int = 0,
                 order: dict[str, torch.Tensor] | None = None):
        self.encoder, self.targets, self.head = encoder, targets, head
        self.decay, self.t_forward, self.t_backward = decay, t_forward, t_backward
        self.thetas = MaskScores({t.param: t.shape for t in targets}, init_mean, init_std, seed, order)
        self.mask_opt = torch.optim.Adam(self.thetas.parameters(), lr=lr_mask)
        self.head_opt = torch.optim.Adam(head.parameters(), lr=lr_head)
        self.ever_pruned = [theta.detach() < 0 for theta in self.thetas.thetas]

    @classmethod
    def from_config(cls, encoder: nn.Module, targets: list[MaskTarget], head: LayerWeightedHead,
                    config: AdaptConfig, decay: float) -> "MaskTrainer":
        """The trainer of ``config`` (``decay``: the resolved per-step push, see ``resolve_decay``)."""
        order = magnitude_order(encoder, targets) if config.init == "magnitude" else None
        return cls(encoder, targets, head, lr_mask=config.lr_mask, lr_head=config.lr_head, decay=decay,
                   t_forward=config.t_forward, t_backward=config.t_backward, init_mean=config.init_mean,
                   init_std=config.init_std, seed=config.seed, order=order)

    def loss(self, batch: dict) -> torch.Tensor:
        relaxed = self.thetas.relaxed(self.t_forward, self.t_backward)
        features = encoder_features(self.encoder, masked_weights(self.encoder, self.targets, relaxed), batch)
        return F.cross_entropy(self.head(features), batch["labels"], ignore_index=IGNORE_INDEX)

    def step(self, batch: dict) -> float:
        loss = self.loss(batch)
        self.mask_opt.zero_grad()
        self.head_opt.zero_grad()
        loss.backward()
        self.mask_opt.step()
        self.head_opt.step()
        self.thetas.push_down(self.decay)
        for seen, theta in zip(self.ever_pruned, self.thetas.thetas):
            seen |= theta.detach() < 0
        return loss.item()

    def pruned_share(self, granularity: str) -> float:
        """The share the stopping rule compares with the target (units: the smaller of FFN and heads)."""
        if granularity == "weights":
            return self.thetas.negative_fraction()
        return min(_unit_fractions(self.thetas, self.targets).values())

    def current_model(self) -> AdaptedModel:
        return AdaptedModel(self.encoder, self.head, self.targets, self.thetas.hard())


@dataclass
class _Run:
    """How training went: the share pruned at the start, the steps taken, why it stopped."""

    initial: float
    steps: int = 0
    stopped: str = "epochs done"
    history: list[dict] = field(default_factory=list)


def _train(trainer: MaskTrainer, batches: list[dict], eval_batches: list[dict] | None, config: AdaptConfig,
           progress: bool) -> _Run:
    granularity, sparsity = config.granularity, config.sparsity
    run = _Run(initial=trainer.pruned_share(granularity))
    rule_can_fire = run.initial < sparsity
    bar = tqdm(total=config.epochs * len(batches), desc=f"adapt ({granularity}, {sparsity:.0%})",
               disable=not progress)
    for epoch in range(config.epochs):
        for batch in batches:
            loss = trainer.step(batch)
            run.steps += 1
            share = trainer.pruned_share(granularity)
            run.history.append({"step": run.steps, "epoch": epoch, "loss": round(loss, 5), "pruned": round(share, 5)})
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f} pruned {share:.1%}", refresh=False)
            if rule_can_fire and share >= sparsity:
                run.stopped = "sparsity reached"
                break
        if eval_batches is not None:
            run.history[-1]["eval_accuracy"] = accuracy(trainer.current_model(), eval_batches)
        if run.stopped == "sparsity reached":
            break
    bar.close()
    return run


def _stats(trainer: MaskTrainer, masks: dict[str, torch.Tensor], run: _Run, decay: float, started: float) -> dict:
    thetas, targets = trainer.thetas, trainer.targets
    kept = sum(int(m.sum()) for m in masks.values())
    recovered = sum(int((masks[t.param] & seen).sum()) for t, seen in zip(targets, trainer.ever_pruned))
    return dict(steps=run.steps, seconds=round(time.perf_counter() - started, 2), stopped=run.stopped,
                decay=decay, initial_pruned=round(run.initial, 5), final_negative=round(thetas.negative_fraction(), 5),
                masked=thetas.numel(), kept=kept, sparsity=round(1 - kept / thetas.numel(), 6),
                recovered=recovered, recovered_share_of_kept=round(recovered / max(kept, 1), 5),
                trainable_head_parameters=sum(p.numel() for p in trainer.head.parameters()),
                fingerprint=fingerprint(trainer.encoder, targets))


def adapt(model: nn.Module, train_batches: Iterable[dict], config: AdaptConfig | None = None, *,
          eval_batches: Iterable[dict] | None = None, progress: bool = True, **overrides) -> Adapted:
    """Learn which pre-trained connections a task keeps (kept weights never change) and a head.

    >>> result = attprune.adapt(model, train_batches, granularity="weights", sparsity=0.5)
    >>> result.save("adapted/mr")                    # 1 bit per masked weight + the head
    >>> config = attprune.AdaptConfig(granularity="units", sparsity=0.5)
    >>> units = attprune.adapt(model, train_batches, config, epochs=1)   # keywords override config
    >>> small = units.model(model).compact()         # smaller dense layers (units.plan)

    ``config``: an ``AdaptConfig`` (default: its defaults); keyword ``overrides`` are its
    fields (an unknown name is a TypeError), and the result's ``config`` is the combination.
    ``train_batches``: batches with ``input_ids``, ``attention_mask`` and ``labels`` (one
    class id per example), iterated once per epoch.  ``eval_batches``: accuracy after every
    epoch and at the end (``stats["eval_accuracy"]``).

    For short runs (ours, not the paper's): ``decay="auto"`` is the push that reaches the
    target near the last step (``auto_decay``; the number used is ``stats["decay"]``);
    ``init="magnitude"`` hands the same N(init_mean, init_std^2) draws out in the order of
    |w| (units: of their weights' norm), so that the untrained mask is magnitude pruning and
    training refines it, instead of starting from a random mask (``"normal"``, the paper's).
    """
    config = AdaptConfig.build(config, overrides)
    encoder = encoder_of(model)
    targets = mask_targets(encoder, config.granularity, config.embeddings)
    batches = check_batches(train_batches)
    eval_batches = check_batches(eval_batches, "eval_batches") if eval_batches is not None else None
    task_head = seeded_head(encoder, config.num_labels or infer_num_labels(model, batches), config.head, config.seed)
    decay = resolve_decay(config, len(batches))
    trainer = MaskTrainer.from_config(encoder, targets, task_head, config, decay)
    started = time.perf_counter()
    run = _train(trainer, batches, eval_batches, config, progress)
    masks = _final_masks(trainer.thetas, targets, config.granularity, config.sparsity)
    plan = None
    if config.granularity == "units":
        plan = plan_from_unit_masks(targets, masks, {"method": "adapt", "ffn": config.sparsity,
                                                     "heads": config.sparsity})
    result = Adapted(config, task_head.eval(), targets, masks, plan, _stats(trainer, masks, run, decay, started),
                     run.history)
    if eval_batches is not None:
        result.stats["eval_accuracy"] = accuracy(result.model(model), eval_batches)
    return result
