"""Which tokens count: padding does not (how per-token scores are then reduced: ``attprune.ops.reference``)."""

from __future__ import annotations

import torch

from ..batches import IGNORE_INDEX
from ..errors import InputError


def token_mask(batch: dict, stream: str, n_tokens: int, n_rows: int) -> torch.Tensor:
    """[rows, tokens] bool mask of the real (non-padding) tokens a site sees.

    ``stream="input"``: ``attention_mask``.  ``stream="decoder"``: ``decoder_attention_mask``,
    else the positions of labels other than ``IGNORE_INDEX``, else every position.
    """
    if stream == "decoder":
        mask = batch.get("decoder_attention_mask")
        if mask is None and batch.get("labels") is not None:
            mask = batch["labels"] != IGNORE_INDEX
    else:
        mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones(n_rows, n_tokens, dtype=torch.bool)
    mask = mask.bool()
    if mask.shape != (n_rows, n_tokens):
        raise InputError(f"{stream} mask has shape {tuple(mask.shape)}, expected {(n_rows, n_tokens)}")
    return mask
