"""The plain PyTorch IG step ops: the reference every fast path is tested against."""

from __future__ import annotations

import torch


def ig_interpolate(z: torch.Tensor, z_baseline: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """[m * B, T, D] step-major: ``z_baseline + alpha_k * (z - z_baseline)`` for each node."""
    a = alphas.to(device=z.device, dtype=z.dtype).view(-1, 1, 1, 1)
    return (z_baseline.unsqueeze(0) + a * (z - z_baseline).unsqueeze(0)).reshape(-1, *z.shape[1:])


def ig_attribute(grads: torch.Tensor, step_weights: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 mask: torch.Tensor, unit_size: int, x_baseline: torch.Tensor | None = None,
                 acc_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-example unit scores [B, I // unit_size] of one chunk of steps, summed over real tokens.

    grads [m, B, T, O] (dF/dZ at each step), step_weights [m], weight [O, I], x [B, T, I],
    mask [B, T]; ``x_baseline`` broadcastable to x (None: zero).
    """
    g_bar = torch.einsum("k,kbto->bto", step_weights.to(grads.device, acc_dtype), grads.to(acc_dtype))
    delta = x.to(acc_dtype) if x_baseline is None else x.to(acc_dtype) - x_baseline.to(acc_dtype)
    per_feature = delta * (g_bar @ weight.to(acc_dtype))
    rows, tokens, features = per_feature.shape
    per_unit = per_feature.view(rows, tokens, features // unit_size, unit_size).sum(-1)
    return (per_unit * mask.to(per_unit.device, acc_dtype).unsqueeze(-1)).sum(1)
