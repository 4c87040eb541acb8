r"""The IG step arithmetic in plain PyTorch: what runs by default, and what every fast path
(``triton/``, the native op) is tested against.

For a site with projection :math:`Z = X W^\top + b`, baseline :math:`X' = 0` and nodes /
weights :math:`(\alpha_k, w_k)`: the step batch is :math:`Z_k = b + \alpha_k (Z - b)`
(``ig_interpolate``; with a [B, T] ``positions`` mask only there, the other positions keep
Z); the output gradients are summed over steps with their weights,
:math:`\bar G = \sum_k w_k\, \partial F / \partial Z_k` (``step_sum``, chunk by chunk); the
unit scores are :math:`S[b, u] = \mathrm{reduce}_t \sum_{i \in u} X[b, t, i]\,(\bar G W)[b, t, i]`
over the real tokens (``unit_scores``). Scores accumulate in float32 (float64 for float64
inputs).
"""

from __future__ import annotations

import torch

REDUCTIONS = ("sum", "mean", "max")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def ig_interpolate(z: torch.Tensor, bias: torch.Tensor | None, alphas: torch.Tensor,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """[m * B, T, D] step-major: ``bias + alpha_k * (z - bias)`` for each node (bias None: 0);
    with ``positions`` ([B, T] bool) only where it is True, ``z`` itself (exactly) elsewhere."""
    a = alphas.to(device=z.device, dtype=z.dtype).view(-1, 1, 1, 1)
    if bias is None:
        out = a * z.unsqueeze(0)
    else:
        bias = bias.to(z.device, z.dtype)
        out = bias + a * (z - bias).unsqueeze(0)
    if positions is not None:
        out = torch.where(positions.to(z.device).bool()[None, :, :, None], out, z.unsqueeze(0))
    return out.reshape(-1, *z.shape[1:])


def step_sum(grads: torch.Tensor, step_weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:math:`\\sum_k w_k G_k`: [m, B, T, O] gradients -> [B, T, O] in ``dtype``."""
    return torch.einsum("k,kbto->bto", step_weights.to(grads.device, dtype), grads.to(dtype))


def per_unit(per_feature: torch.Tensor, unit_size: int) -> torch.Tensor:
    """[rows, tokens, features] -> [rows, tokens, units]: sum the features of each unit."""
    rows, tokens, features = per_feature.shape
    return per_feature.view(rows, tokens, features // unit_size, unit_size).sum(-1)


def reduce_tokens(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[rows, tokens, units] -> [rows, units] over the real tokens (``sum``, ``mean`` or ``max``)."""
    mask = mask.to(per_token.device).bool().unsqueeze(-1)
    if how == "sum":
        return (per_token * mask).sum(1)
    if how == "mean":
        return (per_token * mask).sum(1) / mask.sum(1).clamp_min(1)
    if how == "max":
        filled = per_token.masked_fill(~mask, float("-inf")).amax(1)
        return torch.where(torch.isinf(filled), torch.zeros_like(filled), filled)
    raise ValueError(f"unknown token reduction {how!r}; choose one of {REDUCTIONS}")


def unit_scores(g_bar: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, unit_size: int,
                reduce: str = "sum") -> torch.Tensor:
    """[B, units] from the step-summed output gradient [B, T, O], weight [O, I], input [B, T, I]
    and real-token mask [B, T], in ``g_bar``'s dtype."""
    dtype = g_bar.dtype
    per_feature = x.to(dtype) * (g_bar @ weight.to(dtype))
    return reduce_tokens(per_unit(per_feature, unit_size), mask, reduce)


def ig_attribute(grads: torch.Tensor, step_weights: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 mask: torch.Tensor, unit_size: int) -> torch.Tensor:
    """One chunk of steps' unit scores, summed over real tokens: the contract of the fused ops.

    grads [m, B, T, O] (dF/dZ at each step), step_weights [m], weight [O, I], x [B, T, I],
    mask [B, T] -> [B, I // unit_size].
    """
    g_bar = step_sum(grads, step_weights, accumulation_dtype(x.dtype))
    return unit_scores(g_bar, weight, x, mask, unit_size, "sum")
