r"""IG interpolation (Triton): the m-step batch of a site's output in one pass.

The site projection is linear, so its output on the interpolated input is the interpolated
output: :math:`Z_k = Z' + \alpha_k (Z - Z')`. From Z ([B, T, D], computed once in the clean
pass), the baseline output Z' (the bias, broadcast, or a full [B, T, D]) and the nodes
:math:`\alpha_k`, this writes the step-major batch [m * B, T, D] the upper network consumes,
reading Z and Z' once per step tile and never materialising Z - Z'.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R, BLOCK_D = 16, 128


@triton.jit
def _ig_interpolate_kernel(
    z_ptr, zb_ptr, alpha_ptr, out_ptr,
    R, D,
    stride_zr, stride_zd, stride_br, stride_bd,
    stride_ok, stride_or, stride_od,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    k = tl.program_id(2).to(tl.int64)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = (offs_r < R)[:, None] & (offs_d < D)[None, :]
    z = tl.load(z_ptr + offs_r[:, None] * stride_zr + offs_d[None, :] * stride_zd, mask=ok, other=0.0)
    zb = tl.load(zb_ptr + offs_r[:, None] * stride_br + offs_d[None, :] * stride_bd, mask=ok, other=0.0)
    alpha = tl.load(alpha_ptr + k)
    z32, zb32 = z.to(tl.float32), zb.to(tl.float32)
    value = zb32 + alpha * (z32 - zb32)
    tl.store(out_ptr + k * stride_ok + offs_r[:, None] * stride_or + offs_d[None, :] * stride_od,
             value.to(z.dtype), mask=ok)


def ig_interpolate(z: torch.Tensor, z_baseline: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """[m * B, T, D] step-major interpolation of ``z`` ([B, T, D]) towards ``z_baseline``
    (broadcastable to it) at the nodes ``alphas`` ([m])."""
    rows, tokens, dim = z.shape
    m = alphas.numel()
    flat = z.reshape(rows * tokens, dim)
    base = z_baseline.expand(rows, tokens, dim)
    if base.stride(0) == 0 and base.stride(1) == 0:
        base2d = base[0, 0].unsqueeze(0).expand(rows * tokens, dim)  # the bias: stride 0 over rows
    else:
        base2d = base.reshape(rows * tokens, dim)
    out = torch.empty(m, rows * tokens, dim, dtype=z.dtype, device=z.device)
    alphas = alphas.to(device=z.device, dtype=torch.float32).contiguous()
    grid = (triton.cdiv(rows * tokens, BLOCK_R), triton.cdiv(dim, BLOCK_D), m)
    _ig_interpolate_kernel[grid](flat, base2d, alphas, out, rows * tokens, dim, *flat.stride(), *base2d.stride(),
                                 *out.stride(), BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out.view(m * rows, tokens, dim)
