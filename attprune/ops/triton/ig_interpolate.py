r"""IG interpolation (Triton): the m-step batch of a site's output in one pass.

The site projection is linear, so its output on the interpolated input (baseline 0) is the
interpolated output: :math:`Z_k = b + \alpha_k (Z - b)`, b the projection's bias (0 without
one). From Z ([B, T, D], computed once in the clean pass), b ([D]) and the nodes
:math:`\alpha_k`, this writes the step-major batch [m * B, T, D] the upper network consumes,
reading Z once per step tile and never materialising Z - b. With a [B, T] selection
(``positions``), only the selected tokens are interpolated; the others are Z, copied exactly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R, BLOCK_D = 16, 128


@triton.jit
def _ig_interpolate_kernel(
    z_ptr, bias_ptr, alpha_ptr, select_ptr, out_ptr,
    R, D,
    stride_zr, stride_zd,
    stride_ok, stride_or, stride_od,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, SELECTED: tl.constexpr,
):
    k = tl.program_id(2).to(tl.int64)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    r_ok = offs_r < R
    d_ok = offs_d < D
    ok = r_ok[:, None] & d_ok[None, :]
    z = tl.load(z_ptr + offs_r[:, None] * stride_zr + offs_d[None, :] * stride_zd, mask=ok, other=0.0)
    bias = tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
    alpha = tl.load(alpha_ptr + k)
    value = (bias + alpha * (z.to(tl.float32) - bias)).to(z.dtype)
    if SELECTED:  # interpolate the selected tokens (rows of the flattened [B * T]) only
        chosen = tl.load(select_ptr + offs_r, mask=r_ok, other=0) != 0
        value = tl.where(chosen[:, None], value, z)
    tl.store(out_ptr + k * stride_ok + offs_r[:, None] * stride_or + offs_d[None, :] * stride_od, value, mask=ok)


def ig_interpolate(z: torch.Tensor, bias: torch.Tensor | None, alphas: torch.Tensor,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """[m * B, T, D] step-major interpolation of ``z`` ([B, T, D]) towards ``bias`` ([D] or
    None: zeros) at the nodes ``alphas`` ([m]); with ``positions`` ([B, T] bool) only there."""
    rows, tokens, dim = z.shape
    m = alphas.numel()
    flat = z.reshape(rows * tokens, dim)
    bias = torch.zeros(dim, dtype=z.dtype, device=z.device) if bias is None else bias.to(z.device).contiguous()
    out = torch.empty(m, rows * tokens, dim, dtype=z.dtype, device=z.device)
    alphas = alphas.to(device=z.device, dtype=torch.float32).contiguous()
    if positions is not None and positions.shape != (rows, tokens):
        raise ValueError(f"positions has shape {tuple(positions.shape)}, expected {(rows, tokens)}")
    select = alphas if positions is None else positions.to(device=z.device, dtype=torch.int8).reshape(-1).contiguous()
    grid = (triton.cdiv(rows * tokens, BLOCK_R), triton.cdiv(dim, BLOCK_D), m)
    _ig_interpolate_kernel[grid](flat, bias, alphas, select, out, rows * tokens, dim, *flat.stride(), *out.stride(),
                                 BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D, SELECTED=positions is not None)
    return out.view(m * rows, tokens, dim)
