"""The scalar F(x) per example that attribution explains.

``target="label"``: log-probability of the gold label: of the class (sequence
classification), summed over labelled tokens (token classification), summed over label
tokens with -100 ignored (seq2seq, and causal LM with the usual one-token shift).
``target="prediction"``: the same with the model's own argmax on the clean input in place
of labels (the unsupervised setting).  ``target="probability"``: the probability of the gold
label, exp of what ``"label"`` explains: the softmax probability of the target token for one
labelled token (the knowledge-neurons objective, e.g. the [MASK] of a cloze probe); for
several labelled tokens of an example, their joint probability, the product of their
(teacher-forced) probabilities, not a sum or mean of them (pass a callable for those); not
defined for a regression head.  ``target="normalized"``: the gold answer's log-probability
normalised over the task's answers, ``log p(gold) - logsumexp over answers of log p(answer)``;
``target="margin"``: ``log p(gold) - max over the other answers of log p(answer)``.  The answers
are a classifier's classes, or, for a causal LM, the batch's ``choices`` entry (the first token
of every answer, ``attprune.data.answer_batches``), read at the position that predicts the
first labelled token.  Or a callable ``(outputs, batch) -> Tensor[batch]``.

A masked LM (``...ForMaskedLM``) scores as token classification: its labels hold the target
token at the [MASK] positions and -100 elsewhere.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from ..batches import IGNORE_INDEX
from ..errors import InputError

TargetSpec = Union[str, Callable]
TARGETS = ("label", "prediction", "probability", "normalized", "margin")
#: the targets that read the batch's gold labels
LABEL_TARGETS = ("label", "probability", "normalized", "margin")
#: the targets that compare the gold answer with the task's other answers
CHOICE_TARGETS = ("normalized", "margin")
TASKS = ("sequence", "token", "causal", "seq2seq")


def task_of(model: nn.Module) -> str | None:
    """The task shape of a Hugging Face model, from its config and class name."""
    if getattr(model.config, "is_encoder_decoder", False):
        return "seq2seq"
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if name.endswith("ForTokenClassification"):
        return "token"
    if name.endswith("ForSequenceClassification"):
        return "sequence"
    return None


def logits_of(outputs) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    if not torch.is_tensor(logits):
        raise InputError(
            "target='label'/'prediction' needs a model with a task head that returns logits "
            "(e.g. AutoModelForSequenceClassification); for a bare encoder pass a callable "
            "target=(outputs, batch) -> Tensor[batch]"
        )
    return logits


def _task(model: nn.Module, logits: torch.Tensor) -> str:
    task = task_of(model)
    if task is not None:
        return task
    return "sequence" if logits.dim() == 2 else "token"


def check_labels(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise a clear error for labels a head cannot score."""
    task = _task(model, logits)
    n_classes = logits.shape[-1]
    if task == "sequence" and n_classes == 1:
        return  # regression
    valid = labels[labels != IGNORE_INDEX]
    if valid.numel() and (valid.min() < 0 or valid.max() >= n_classes):
        raise InputError(
            f"labels must lie in [0, {n_classes}) (or be {IGNORE_INDEX} to ignore a position); got values "
            f"from {int(valid.min())} to {int(valid.max())}. Map your label values to class ids first."
        )
    if task == "sequence" and labels.dim() != 1:
        raise InputError(f"sequence classification needs labels of shape [batch], got {tuple(labels.shape)}")


def value_of(model: nn.Module, target: str, logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
             logit_positions: torch.Tensor | None = None, choices: torch.Tensor | None = None) -> torch.Tensor:
    """F per example for a named target: the log-probability of the labels ("label",
    "prediction": ``labels`` then hold the predictions), its exp ("probability"), or the gold
    answer against the others ("normalized", "margin": ``choices`` [rows, answers] for a causal LM)."""
    if target in CHOICE_TARGETS:
        return _against_choices(model, target, logits, labels, dtype, logit_positions, choices)
    log_prob = log_prob_of(model, logits, labels, dtype, logit_positions)
    if target != "probability":
        return log_prob
    if _task(model, logits) == "sequence" and logits.shape[-1] == 1:
        raise InputError("target='probability' needs a classifier or an LM head; a regression head has no "
                         "probability (use target='label')")
    return log_prob.exp()


def log_prob_of(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
                logit_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example sum of log p(label) over the labelled positions -> [batch] in ``dtype``.

    ``logit_positions`` (causal LMs): the logits are those of these positions only, each
    predicting the label one position later.
    """
    task = _task(model, logits)
    logits = logits.to(dtype)
    if task == "sequence":
        if logits.shape[-1] == 1:  # regression head: F = -(prediction - label)^2
            return -(logits[:, 0] - labels.to(dtype)) ** 2
        return torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    if task == "causal" and logit_positions is not None:
        labels = labels[:, logit_positions + 1]
    elif task == "causal":
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE_INDEX
    safe = labels.masked_fill(~keep, 0)
    logp = torch.log_softmax(logits, -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (logp * keep).sum(-1)


def _against_choices(model: nn.Module, target: str, logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
                     logit_positions: torch.Tensor | None, choices: torch.Tensor | None) -> torch.Tensor:
    """``"normalized"`` / ``"margin"``: the gold answer's log-probability against the other answers'."""
    task = _task(model, logits)
    if task == "sequence" and logits.shape[-1] > 1:  # the answers are the classes
        log_probs = torch.log_softmax(logits.to(dtype), -1)
        gold = labels
    elif task == "causal":
        if choices is None:
            raise InputError(f"target={target!r} compares the gold answer with the task's other answers: every batch "
                             "needs a 'choices' entry, the first token of each answer (attprune.data.answer_batches "
                             "or prompt_batches add it)")
        if logit_positions is not None:
            labels = labels[:, logit_positions + 1]
        else:
            logits, labels = logits[:, :-1], labels[:, 1:]
        first = (labels != IGNORE_INDEX).int().argmax(1)  # the position predicting the first answer token
        rows = torch.arange(labels.shape[0], device=labels.device)
        gold = labels[rows, first]
        vocabulary = torch.log_softmax(logits[rows, first].to(dtype), -1)
        if not (choices == gold[:, None]).any(1).all():
            raise InputError("the gold answer's first token is not among the batch's choices")
        log_probs, gold = vocabulary.gather(1, choices), (choices == gold[:, None]).int().argmax(1)
    else:
        raise InputError(f"target={target!r} needs a classifier or a causal LM with answer choices, not a {task} model")
    gold_log_prob = log_probs.gather(1, gold[:, None]).squeeze(1)
    if target == "normalized":
        return gold_log_prob - torch.logsumexp(log_probs, 1)
    others = log_probs.scatter(1, gold[:, None], float("-inf"))
    return gold_log_prob - others.max(1).values


def predicted_labels(model: nn.Module, logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The model's own argmax in the place of labels (positions as ``labels`` would have)."""
    task = _task(model, logits)
    pred = logits.argmax(-1)
    if task == "sequence":
        return logits[:, 0].detach().clone() if logits.shape[-1] == 1 else pred
    if task == "seq2seq":
        mask = batch.get("decoder_attention_mask")
        if mask is None and batch.get("labels") is not None:
            mask = batch["labels"] != IGNORE_INDEX
        return pred if mask is None else pred.masked_fill(~mask.bool(), IGNORE_INDEX)
    mask = batch.get("attention_mask")
    if task == "causal":
        # position t + 1 is "labelled" with the argmax of the logits at t
        shifted = torch.full_like(pred, IGNORE_INDEX)
        shifted[:, 1:] = pred[:, :-1]
        return shifted if mask is None else shifted.masked_fill(~mask.bool(), IGNORE_INDEX)
    return pred if mask is None else pred.masked_fill(~mask.bool(), IGNORE_INDEX)


def resolve(target: TargetSpec) -> TargetSpec:
    if callable(target) or target in TARGETS:
        return target
    raise InputError(TARGET_ERROR.format(target=target))


TARGET_ERROR = ("target must be 'label', 'prediction' or a callable (outputs, batch) -> Tensor[batch], "
                "'probability' (the gold label's probability), 'normalized' or 'margin' (the gold answer against "
                "the others); got {target!r}")
