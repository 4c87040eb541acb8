"""``adapt``: learn a task as a mask over frozen pre-trained weights, plus a small head.

Each step: the masked encoder (weights x tempered_sigmoid(theta)) and the head run on a
batch; theta takes an Adam step of size ``lr_mask`` (the paper's 2e-5 is BERT's Adam rate),
then every theta is pushed down by ``decay``; the head takes an Adam step of ``lr_head``.
Training stops once the fraction of negative theta reaches ``sparsity`` (or after
``epochs``); the final mask keeps exactly the (1 - sparsity) share with the largest theta,
which is theta > 0 at the stop up to the last step's overshoot.  When the initial theta
already has more than ``sparsity`` negative (with N(0.01, 0.001) about 38% are), the rule
cannot fire and all epochs run.

Memory: theta is one float32 per masked weight plus Adam's two moments: 3x the masked
weights in float32 (all-MiniLM-L6-v2: 10.6 M masked weights -> 127 MB), on top of the
frozen model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attribution.targets import IGNORE
from ..data import accuracy
from ..plan.plan import Plan
from ..sites import FFN, HEADS
from .estimator import MaskScores, keep_top
from .head import LayerWeightedHead, new_head
from .model import AdaptedModel, encoder_features, encoder_of, hidden_size, n_layers
from .store import fingerprint
from .targets import MaskTarget, mask_targets, masked_weights


@dataclass
class Adapted:
    """What ``adapt`` learned: the head, boolean masks per target, and (units) the plan.

    >>> result = attprune.adapt(model, batches, sparsity=0.5)
    >>> result.save("adapted/mr"); task_model = result.model(model)
    """

    granularity: str
    head: LayerWeightedHead
    targets: list[MaskTarget]
    masks: dict[str, torch.Tensor]
    plan: Plan | None = None
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def model(self, pretrained: nn.Module) -> AdaptedModel:
        """The task model on top of ``pretrained`` (shared, never modified)."""
        return AdaptedModel(encoder_of(pretrained), self.head, self.targets, self.masks, self.plan)

    def save(self, path: str | Path, tokenizer=None) -> Path:
        """Write the head, the masks (bit-packed, or the plan), the config and optionally the
        tokenizer (``path/tokenizer``), all at once; see ``apply_adapted``."""
        from .store import save_adapted
        return save_adapted(self, path, tokenizer)


def check_batches(batches, name: str = "train_batches") -> list[dict]:
    batches = list(batches) if batches is not None else []
    if not batches:
        raise ValueError(f"{name} is empty: adapting needs labelled batches")
    for batch in batches:
        if "labels" not in batch or "input_ids" not in batch:
            raise ValueError(f"every batch of {name} needs input_ids and labels (one class id per example); "
                             f"got keys {sorted(batch)}")
        if batch["labels"].dim() != 1:
            raise ValueError(f"{name}: labels must be one class id per example (sequence classification), "
                             f"got shape {tuple(batch['labels'].shape)}")
    return batches


def infer_num_labels(model: nn.Module, batches: list[dict]) -> int:
    """Classes of the task: the largest label + 1 (at least 2), or a classifier's own count if larger."""
    labels = torch.cat([b["labels"] for b in batches])
    labels = labels[labels != IGNORE]
    if labels.numel() and labels.min() < 0:
        raise ValueError(f"labels must be class ids >= 0, found {int(labels.min())}")
    seen = int(labels.max()) + 1 if labels.numel() else 2
    is_classifier = type(model).__name__.endswith("ForSequenceClassification")
    configured = getattr(model.config, "num_labels", 0) if is_classifier else 0
    return max(seen, configured, 2)


def seeded_head(encoder: nn.Module, num_labels: int, kind: str, seed: int) -> LayerWeightedHead:
    torch.manual_seed(seed)
    return new_head(encoder, num_labels, kind, n_layers(encoder), hidden_size(encoder))


def auto_decay(sparsity: float, total_steps: int, init_mean: float, init_std: float) -> float:
    """The constant push that alone would move the initial theta's ``sparsity``-quantile to 0
    by the last step, so that a short run reaches the target near its end (0 when the
    initial theta already has that share negative)."""
    quantile = init_mean + init_std * float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(sparsity)))
    return max(quantile, 0.0) / max(total_steps, 1)


INITS = ("normal", "magnitude")


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


def check_sparsity(sparsity: float) -> None:
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a fraction of connections to remove in [0, 1), got {sparsity!r}")


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

    def loss(self, batch: dict) -> torch.Tensor:
        relaxed = self.thetas.relaxed(self.t_forward, self.t_backward)
        features = encoder_features(self.encoder, masked_weights(self.encoder, self.targets, relaxed), batch)
        return F.cross_entropy(self.head(features), batch["labels"], ignore_index=IGNORE)

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


def adapt(model: nn.Module, train_batches, *, granularity: str = "weights", sparsity: float = 0.5,
          head: str = "layer-weighted-mlp", epochs: int = 3, lr_mask: float = 2e-5, lr_head: float = 2e-5,
          decay: float | str = 2e-7, t_forward: float = 1e5, t_backward: float = 1.0, eval_batches=None,
          progress: bool = True, seed: int = 0, embeddings: bool = False, num_labels: int | None = None,
          init_mean: float = 0.01, init_std: float = 0.001 ** 0.5, init: str = "normal") -> Adapted:
    """Learn which pre-trained connections a task keeps (kept weights never change) and a head.

    >>> result = attprune.adapt(model, train_batches, granularity="weights", sparsity=0.5)
    >>> result.save("adapted/mr")                    # 1 bit per masked weight + the head
    >>> units = attprune.adapt(model, train_batches, granularity="units", sparsity=0.5)
    >>> small = units.model(model).compact()         # smaller dense layers (units.plan)

    ``train_batches``: batches with ``input_ids``, ``attention_mask`` and ``labels`` (one
    class id per example), iterated once per epoch.  ``granularity``: ``"weights"`` (every
    Linear weight of the encoder; ``embeddings=True`` adds the embedding tables) or
    ``"units"`` (FFN neurons and attention heads, each kind at ``sparsity``; gives a
    ``Plan``).  ``head``: ``"layer-weighted-mlp"`` or ``"linear"``.  ``eval_batches``:
    accuracy after every epoch and at the end (``stats["eval_accuracy"]``).

    For short runs (ours, not the paper's): ``decay="auto"`` is the push that reaches the
    target near the last step (``auto_decay``); ``init="magnitude"`` hands the same
    N(init_mean, init_std^2) draws out in the order of |w| (units: of their weights' norm),
    so that the untrained mask is magnitude pruning and training refines it, instead of
    starting from a random mask (``"normal"``, the paper's).
    """
    check_sparsity(sparsity)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    encoder = encoder_of(model)
    targets = mask_targets(encoder, granularity, embeddings)
    batches = check_batches(train_batches)
    eval_batches = check_batches(eval_batches, "eval_batches") if eval_batches is not None else None
    num_labels = num_labels or infer_num_labels(model, batches)
    if decay == "auto":
        decay = auto_decay(sparsity, epochs * len(batches), init_mean, init_std)
    elif not isinstance(decay, (int, float)) or decay < 0:
        raise ValueError(f"decay must be a number >= 0 or 'auto', got {decay!r}")
    task_head = seeded_head(encoder, num_labels, head, seed)
    trainer = MaskTrainer(encoder, targets, task_head, lr_mask=lr_mask, lr_head=lr_head, decay=decay,
                          t_forward=t_forward, t_backward=t_backward, init_mean=init_mean, init_std=init_std,
                          seed=seed, order=magnitude_order(encoder, targets) if init == "magnitude" else None)
    config = dict(granularity=granularity, sparsity=sparsity, head=head, epochs=epochs, lr_mask=lr_mask,
                  lr_head=lr_head, decay=decay, t_forward=t_forward, t_backward=t_backward, seed=seed,
                  embeddings=embeddings, num_labels=num_labels, init_mean=init_mean, init_std=init_std,
                  init=init, optimizer="adam")
    initial = trainer.pruned_share(granularity)
    rule_can_fire = initial < sparsity
    history, step, stopped = [], 0, None
    started = time.perf_counter()
    bar = tqdm(total=epochs * len(batches), desc=f"adapt ({granularity}, {sparsity:.0%})", disable=not progress)
    for epoch in range(epochs):
        for batch in batches:
            loss = trainer.step(batch)
            step += 1
            share = trainer.pruned_share(granularity)
            history.append({"step": step, "epoch": epoch, "loss": round(loss, 5), "pruned": round(share, 5)})
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f} pruned {share:.1%}", refresh=False)
            if rule_can_fire and share >= sparsity:
                stopped = "sparsity reached"
                break
        if eval_batches is not None:
            history[-1]["eval_accuracy"] = accuracy(trainer.current_model(), eval_batches)
        if stopped:
            break
    bar.close()
    thetas = trainer.thetas
    masks = _final_masks(thetas, targets, granularity, sparsity)
    kept = sum(int(m.sum()) for m in masks.values())
    recovered = sum(int((masks[t.param] & seen).sum()) for t, seen in zip(targets, trainer.ever_pruned))
    stats = dict(steps=step, seconds=round(time.perf_counter() - started, 2), stopped=stopped or "epochs done",
                 initial_pruned=round(initial, 5), final_negative=round(thetas.negative_fraction(), 5),
                 masked=thetas.numel(), kept=kept, sparsity=round(1 - kept / thetas.numel(), 6),
                 recovered=recovered, recovered_share_of_kept=round(recovered / max(kept, 1), 5),
                 trainable_head_parameters=sum(p.numel() for p in task_head.parameters()),
                 fingerprint=fingerprint(encoder, targets))
    plan = None
    if granularity == "units":
        plan = plan_from_unit_masks(targets, masks, {"method": "adapt", "ffn": sparsity, "heads": sparsity})
    result = Adapted(granularity, task_head.eval(), targets, masks, plan, config, stats, history)
    if eval_batches is not None:
        stats["eval_accuracy"] = accuracy(result.model(model), eval_batches)
    return result
