"""Which tokens count (padding does not) and how per-token unit scores become one per example."""

from __future__ import annotations

import torch

REDUCTIONS = ("sum", "mean", "max")


def token_mask(batch: dict, stream: str, n_tokens: int, n_rows: int) -> torch.Tensor:
    """[rows, tokens] bool mask of the real (non-padding) tokens a site sees.

    ``stream="input"``: ``attention_mask``.  ``stream="decoder"``: ``decoder_attention_mask``,
    else the positions of labels other than -100, else every position.
    """
    if stream == "decoder":
        mask = batch.get("decoder_attention_mask")
        if mask is None and batch.get("labels") is not None:
            mask = batch["labels"] != -100
    else:
        mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones(n_rows, n_tokens, dtype=torch.bool)
    mask = mask.bool()
    if mask.shape != (n_rows, n_tokens):
        raise ValueError(f"{stream} mask has shape {tuple(mask.shape)}, expected {(n_rows, n_tokens)}")
    return mask


def reduce_tokens(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[rows, tokens, units] -> [rows, units] over the real tokens (``sum``, ``mean`` or ``max``)."""
    mask = mask.to(per_token.device).unsqueeze(-1)
    if how == "sum":
        return (per_token * mask).sum(1)
    if how == "mean":
        return (per_token * mask).sum(1) / mask.sum(1).clamp_min(1)
    if how == "max":
        filled = per_token.masked_fill(~mask, float("-inf")).amax(1)
        return torch.where(torch.isinf(filled), torch.zeros_like(filled), filled)
    raise ValueError(f"unknown reduce_tokens {how!r}; choose one of {REDUCTIONS}")


def per_unit(per_feature: torch.Tensor, unit_size: int) -> torch.Tensor:
    """[rows, tokens, features] -> [rows, tokens, units]: sum the features of each unit."""
    rows, tokens, features = per_feature.shape
    return per_feature.view(rows, tokens, features // unit_size, unit_size).sum(-1)
