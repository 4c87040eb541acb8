"""Checks on each input batch before it reaches the model: vocabulary and length.

A token id outside the embedding table means the tokenizer does not belong to the model
(PyTorch would fail deep inside with an index error, or silently on some devices).
Sequences longer than the model's learned positions are truncated with a warning
(``long_inputs="truncate"``) or refused (``"error"``).
"""

from __future__ import annotations

import warnings

import torch

from ..architectures import spec_for
from ..batches import truncate_tokens
from ..errors import InputError

LONG_INPUTS = ("truncate", "error")


def max_tokens(model) -> int | None:
    """Longest input the model has positions for (None: relative positions, no limit), as its
    family's spec says (``ArchSpec.max_tokens``)."""
    return spec_for(model).max_tokens(model.config)


def check_batch(model, batch: dict, long_inputs: str = "truncate") -> dict:
    """The batch, truncated to the model's positions if needed; clear errors for bad tokens."""
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    if not torch.is_tensor(ids):
        return batch  # the runner explains what a batch must hold
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(vocab, int) and ids.numel() and (int(ids.max()) >= vocab or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
        raise InputError(f"token id {bad} is outside the model's vocabulary of {vocab}: the tokenizer does not "
                         "match the model (tokenize with the model's own tokenizer)")
    limit = max_tokens(model)
    if limit is None or ids.dim() < 2 or ids.shape[1] <= limit:
        return batch
    if long_inputs == "error":
        raise InputError(f"inputs of {ids.shape[1]} tokens are longer than the model's {limit} positions; "
                         f"truncate them (max_length={limit}) or pass long_inputs='truncate'")
    warnings.warn(f"inputs of {ids.shape[1]} tokens truncated to the model's {limit} positions", stacklevel=3)
    return truncate_tokens(batch, limit)
