r"""IG interpolation (Triton): the m-step batch of a site's output in one pass.

The site projection is linear, so its output on the interpolated input (baseline 0) is the
interpolated output: :math:`Z_k = b + \alpha_k (Z - b)`, b the projection's bias (0 without
one). From Z ([B, T, D], computed once in the clean pass), b ([D]) and the nodes
:math:`\alpha_k`, this writes the step-major batch [m * B, T, D] the upper network consumes,
reading Z once per step tile and never materialising Z - b.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R, BLOCK_D = 16, 128


@triton.jit
def _ig_interpolate_kernel(
    z_ptr, bias_ptr, alpha_ptr, out_ptr,
    R, D,
    stride_zr, stride_zd,
    stride_ok, stride_or, stride_od,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    k = tl.program_id(2).to(tl.int64)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    ok = (offs_r < R)[:, None] & d_ok[None, :]
    z = tl.load(z_ptr + offs_r[:, None] * stride_zr + offs_d[None, :] * stride_zd, mask=ok, other=0.0)
    bias = tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
    alpha = tl.load(alpha_ptr + k)
    value = bias + alpha * (z.to(tl.float32) - bias)
    tl.store(out_ptr + k * stride_ok + offs_r[:, None] * stride_or + offs_d[None, :] * stride_od,
             value.to(z.dtype), mask=ok)


def ig_interpolate(z: torch.Tensor, bias: torch.Tensor | None, alphas: torch.Tensor) -> torch.Tensor:
    """[m * B, T, D] step-major interpolation of ``z`` ([B, T, D]) towards ``bias`` ([D] or
    None: zeros) at the nodes ``alphas`` ([m])."""
    rows, tokens, dim = z.shape
    m = alphas.numel()
    flat = z.reshape(rows * tokens, dim)
    bias = torch.zeros(dim, dtype=z.dtype, device=z.device) if bias is None else bias.to(z.device).contiguous()
    out = torch.empty(m, rows * tokens, dim, dtype=z.dtype, device=z.device)
    alphas = alphas.to(device=z.device, dtype=torch.float32).contiguous()
    grid = (triton.cdiv(rows * tokens, BLOCK_R), triton.cdiv(dim, BLOCK_D), m)
    _ig_interpolate_kernel[grid](flat, bias, alphas, out, rows * tokens, dim, *flat.stride(), *out.stride(),
                                 BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out.view(m * rows, tokens, dim)
