r"""Fused IG attribute step (Triton).

Given the upper network's output gradients at every step, :math:`G_k = \partial F / \partial Z_k`
([m, B, T, O]), the step weights :math:`w_k`, the site projection's weight W ([O, I]), the
site input X (the baseline is 0) and the token mask, compute per-example unit scores

.. math::

    S[b, u] = \sum_{t:\,mask[b,t]} \sum_{i \in u} X[b, t, i]
              \Big( \big(\textstyle\sum_k w_k G_k[b, t, :]\big) W \Big)[t, i]

as one GEMM: the prologue sums the steps while loading a G tile, the epilogue multiplies by
the activation, reduces over tokens and over a unit's features (1 for an FFN neuron,
``head_dim`` for a head) and adds into S. Neither the summed gradient [B, T, O] nor the
[B, T, I] product is written to memory. Accumulation is float32 for every input dtype.

Grid: (token tiles x feature tiles, examples). S is accumulated with atomic adds (token
tiles of one example add into the same row), so the caller passes a zeroed S, or one
holding earlier chunks of steps: S is linear in G.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: (BLOCK_T, BLOCK_O, BLOCK_I, num_warps) per input dtype: a fixed table, no autotuning
BLOCKS = {
    torch.float32: (32, 32, 64, 4),
    torch.float16: (64, 32, 128, 4),
    torch.bfloat16: (64, 32, 128, 4),
}


@triton.jit
def _ig_attribute_kernel(
    g_ptr, step_w_ptr, weight_ptr, x_ptr, mask_ptr, out_ptr,
    n_steps, T, O, I, U,
    stride_gk, stride_gb, stride_gt, stride_go,
    stride_wo, stride_wi,
    stride_xb, stride_xt, stride_xi,
    stride_mb, stride_mt,
    stride_sb, stride_su,
    UNIT: tl.constexpr, GROUPED: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n_i_blocks = tl.cdiv(I, BLOCK_I)
    pid_t = pid // n_i_blocks
    pid_i = pid % n_i_blocks
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    t_ok = offs_t < T
    i_ok = offs_i < I

    acc = tl.zeros((BLOCK_T, BLOCK_I), dtype=tl.float32)
    g_rows = g_ptr + b * stride_gb + offs_t[:, None] * stride_gt
    for o0 in range(0, O, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        o_ok = offs_o < O
        tile_ok = t_ok[:, None] & o_ok[None, :]
        # prologue: the step-weighted sum of this gradient tile, in float32
        g_bar = tl.zeros((BLOCK_T, BLOCK_O), dtype=tl.float32)
        for k in range(0, n_steps):
            w_k = tl.load(step_w_ptr + k)
            g = tl.load(g_rows + k * stride_gk + offs_o[None, :] * stride_go, mask=tile_ok, other=0.0)
            g_bar += w_k * g.to(tl.float32)
        w = tl.load(weight_ptr + offs_o[:, None] * stride_wo + offs_i[None, :] * stride_wi,
                    mask=o_ok[:, None] & i_ok[None, :], other=0.0)
        if DOT_FP32:
            acc += tl.dot(g_bar, w.to(tl.float32), input_precision="ieee")
        else:  # tensor cores: the summed gradient in the weight's dtype, float32 accumulation
            acc += tl.dot(g_bar.to(w.dtype), w)

    # epilogue: x X, the token mask, the token sum and the unit sum
    xy_ok = t_ok[:, None] & i_ok[None, :]
    x = tl.load(x_ptr + b * stride_xb + offs_t[:, None] * stride_xt + offs_i[None, :] * stride_xi,
                mask=xy_ok, other=0.0).to(tl.float32)
    m = tl.load(mask_ptr + b * stride_mb + offs_t * stride_mt, mask=t_ok, other=0.0).to(tl.float32)
    per_feature = tl.sum(acc * x * m[:, None], axis=0)
    if GROUPED:  # UNIT is a power of two dividing BLOCK_I: sum whole units in registers
        per_unit = tl.sum(tl.reshape(per_feature, (BLOCK_I // UNIT, UNIT)), axis=1)
        offs_u = pid_i * (BLOCK_I // UNIT) + tl.arange(0, BLOCK_I // UNIT)
        tl.atomic_add(out_ptr + b * stride_sb + offs_u * stride_su, per_unit, mask=offs_u < U)
    else:
        tl.atomic_add(out_ptr + b * stride_sb + (offs_i // UNIT) * stride_su, per_feature, mask=i_ok)


def ig_attribute(grads: torch.Tensor, step_weights: torch.Tensor, weight: torch.Tensor, x: torch.Tensor,
                 mask: torch.Tensor, unit_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Add the per-example unit scores of these steps to ``out`` ([B, I // unit_size], float32).

    grads [m, B, T, O], step_weights [m], weight [O, I], x [B, T, I], mask [B, T]. Any strides.
    """
    m, rows, tokens, d_out = grads.shape
    d_in = weight.shape[1]
    if weight.shape[0] != d_out or x.shape != (rows, tokens, d_in) or mask.shape != (rows, tokens):
        raise ValueError(f"shape mismatch: grads {tuple(grads.shape)}, weight {tuple(weight.shape)}, "
                         f"x {tuple(x.shape)}, mask {tuple(mask.shape)}")
    if d_in % unit_size:
        raise ValueError(f"{d_in} features do not split into units of {unit_size}")
    units = d_in // unit_size
    if out is None:
        out = torch.zeros(rows, units, dtype=torch.float32, device=x.device)
    step_weights = step_weights.to(device=x.device, dtype=torch.float32).contiguous()
    mask = mask.to(device=x.device, dtype=torch.float32)
    constants, warps = launch_config(grads.dtype, weight.dtype, unit_size)
    grid = (triton.cdiv(tokens, constants["BLOCK_T"]) * triton.cdiv(d_in, constants["BLOCK_I"]), rows)
    _ig_attribute_kernel[grid](
        grads, step_weights, weight, x, mask, out,
        m, tokens, d_out, d_in, units,
        *grads.stride(), *weight.stride(), *x.stride(), *mask.stride(), *out.stride(),
        **constants, num_warps=warps,
    )
    return out


def launch_config(grads_dtype: torch.dtype, weight_dtype: torch.dtype, unit_size: int) -> tuple[dict, int]:
    """The kernel's compile-time constants and warps for these inputs (what ``aot.py`` compiles)."""
    block_t, block_o, block_i, warps = BLOCKS.get(grads_dtype, BLOCKS[torch.float32])
    grouped = unit_size & (unit_size - 1) == 0 and unit_size <= 1024
    if grouped and unit_size > block_i:  # whole units per tile: as many features, fewer tokens (no spills)
        block_t = max(16, block_t * block_i // unit_size)
        block_i = unit_size
    dot_fp32 = grads_dtype == torch.float32 or weight_dtype == torch.float32 or _interpreting()
    return dict(UNIT=unit_size, GROUPED=grouped, DOT_FP32=dot_fp32, BLOCK_T=block_t, BLOCK_O=block_o,
                BLOCK_I=block_i), warps


def _interpreting() -> bool:
    # the interpreter's bf16/fp16 tl.dot is wrong (triton 3.6-3.9): dot in float32 there
    return os.environ.get("TRITON_INTERPRET") == "1"
