"""Multi-scale deformable attention as a Triton kernel (forward and backward), for CUDA.

Same contract and conventions as :func:`.ms_deform_attn.ms_deform_attn_sample` (the pure-PyTorch path, which
stays the reference): value (B, S, H, Dh) flattened level by level, each level row-major; sampling locations
(B, Nq, H, L, P, 2) normalised ``(x, y)`` in [0, 1] of each level with pixel centres at ``(col + 0.5) / w``
(``align_corners=False``); bilinear interpolation with zeros outside the map; attention weights
(B, Nq, H, L, P) used as given. Returns (B, Nq, H * Dh) in ``value``'s dtype.

Unlike the PyTorch path it never materialises the samples: one program handles ``BLOCK_Q`` queries of one
(image, head) and all Dh channels, loops over levels and points, reads the four neighbours of each sampling
point straight from ``value`` and accumulates the weighted sum in registers. Inputs of any floating dtype are
read as they are (float16 / bfloat16 / float32 / float64); accumulation is float32 (float64 when any input is
float64, which is what the CPU tests use with Triton's interpreter).

Backward (one kernel, same tiling): for each point and neighbour,

* ``grad_value[neighbour] += weight * bilinear_coefficient * grad_out`` by atomic adds into a float32 (float64)
  buffer, cast to value's dtype at the end;
* ``grad_weight = <sample, grad_out>`` over the Dh channels;
* ``grad_location = weight * (w_l, h_l) * <d sample / d (px, py), grad_out>``, the derivative of the bilinear
  coefficients in pixel units times d pixel / d normalised location.

Where a location lies exactly on a pixel-centre line the bilinear sample has a kink; like ``grid_sample`` the
kernel uses the one-sided derivative of ``floor``'s cell there.

The kernel runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before ``triton`` is first imported), which is how the CPU tests check it.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from .ms_deform_attn_checks import check_inputs  # the same rules and messages as the PyTorch path

try:  # Triton ships with the CUDA wheels of torch; without it the PyTorch path is used
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

__all__ = ["triton_available", "triton_usable_on", "ms_deform_attn_triton"]


def triton_available() -> bool:
    """Whether ``triton`` imported."""
    return triton is not None


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors): ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_usable_on(device: torch.device) -> bool:
    """Whether the kernel can run on tensors of ``device``: CUDA with Triton, or CPU under the interpreter."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())


if triton is not None:

    @triton.jit
    def _corner(value_ptr, row_base, start, row, col, hl, wl, d, q_mask, d_mask,
                H: tl.constexpr, D: tl.constexpr, ACC: tl.constexpr):
        """One bilinear neighbour (row, col) of level l for BLOCK_Q queries: (offsets, mask, values as ACC).

        ``row_base`` is ``b * S`` (int64); token index ``start + row * w + col``; value offset
        ``((b * S + token) * H + head) * D + channel`` with the head already folded into ``d``'s base."""
        inside = q_mask & (row >= 0) & (row < hl) & (col >= 0) & (col < wl)
        token = start + tl.where(inside, row * wl + col, 0)
        offsets = ((row_base + token.to(tl.int64)) * H)[:, None] * D + d[None, :]
        mask = inside[:, None] & d_mask[None, :]
        values = tl.load(value_ptr + offsets, mask=mask, other=0.0).to(ACC)
        return offsets, mask, values

    @triton.jit
    def _forward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, S, NQ,
                        H: tl.constexpr, D: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                        BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        head = pid_bh % H
        q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_mask = q < NQ
        d_offsets = tl.arange(0, BLOCK_D)
        d_mask = d_offsets < D
        d = head * D + d_offsets                                  # channel offset of this head in a token
        row_base = b.to(tl.int64) * S
        bqh = (b.to(tl.int64) * NQ + q) * H + head                # (B, Nq, H) row of locations / weights
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC)
        for lvl in tl.static_range(L):
            hl = tl.load(shapes_ptr + 2 * lvl)
            wl = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(starts_ptr + lvl)
            for p in tl.static_range(P):
                lp = bqh * (L * P) + lvl * P + p
                x = tl.load(loc_ptr + 2 * lp, mask=q_mask, other=0.0).to(ACC)
                y = tl.load(loc_ptr + 2 * lp + 1, mask=q_mask, other=0.0).to(ACC)
                a = tl.load(attn_ptr + lp, mask=q_mask, other=0.0).to(ACC)
                px = x * wl - 0.5                                 # pixel coordinates, centres on integers
                py = y * hl - 0.5
                x0f = tl.floor(px)
                y0f = tl.floor(py)
                fx = px - x0f
                fy = py - y0f
                x0 = x0f.to(tl.int32)
                y0 = y0f.to(tl.int32)
                _, _, v00 = _corner(value_ptr, row_base, start, y0, x0, hl, wl, d, q_mask, d_mask, H, D, ACC)
                _, _, v01 = _corner(value_ptr, row_base, start, y0, x0 + 1, hl, wl, d, q_mask, d_mask, H, D, ACC)
                _, _, v10 = _corner(value_ptr, row_base, start, y0 + 1, x0, hl, wl, d, q_mask, d_mask, H, D, ACC)
                _, _, v11 = _corner(value_ptr, row_base, start, y0 + 1, x0 + 1, hl, wl, d, q_mask, d_mask, H, D,
                                    ACC)
                sample = (((1 - fy) * (1 - fx))[:, None] * v00 + ((1 - fy) * fx)[:, None] * v01
                          + (fy * (1 - fx))[:, None] * v10 + (fy * fx)[:, None] * v11)
                acc += a[:, None] * sample
        out_offsets = bqh[:, None] * D + d_offsets[None, :]      # out is (B, Nq, H, D)
        tl.store(out_ptr + out_offsets, acc.to(out_ptr.dtype.element_ty),
                 mask=q_mask[:, None] & d_mask[None, :])

    @triton.jit
    def _backward_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                         grad_value_ptr, grad_loc_ptr, grad_attn_ptr, S, NQ,
                         H: tl.constexpr, D: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                         BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
        pid_q = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        head = pid_bh % H
        q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q_mask = q < NQ
        d_offsets = tl.arange(0, BLOCK_D)
        d_mask = d_offsets < D
        d = head * D + d_offsets
        row_base = b.to(tl.int64) * S
        bqh = (b.to(tl.int64) * NQ + q) * H + head
        qd_mask = q_mask[:, None] & d_mask[None, :]
        go = tl.load(grad_out_ptr + bqh[:, None] * D + d_offsets[None, :], mask=qd_mask, other=0.0).to(ACC)
        for lvl in tl.static_range(L):
            hl = tl.load(shapes_ptr + 2 * lvl)
            wl = tl.load(shapes_ptr + 2 * lvl + 1)
            start = tl.load(starts_ptr + lvl)
            for p in tl.static_range(P):
                lp = bqh * (L * P) + lvl * P + p
                x = tl.load(loc_ptr + 2 * lp, mask=q_mask, other=0.0).to(ACC)
                y = tl.load(loc_ptr + 2 * lp + 1, mask=q_mask, other=0.0).to(ACC)
                a = tl.load(attn_ptr + lp, mask=q_mask, other=0.0).to(ACC)
                px = x * wl - 0.5
                py = y * hl - 0.5
                x0f = tl.floor(px)
                y0f = tl.floor(py)
                fx = px - x0f
                fy = py - y0f
                x0 = x0f.to(tl.int32)
                y0 = y0f.to(tl.int32)
                o00, m00, v00 = _corner(value_ptr, row_base, start, y0, x0, hl, wl, d, q_mask, d_mask, H, D, ACC)
                o01, m01, v01 = _corner(value_ptr, row_base, start, y0, x0 + 1, hl, wl, d, q_mask, d_mask, H, D,
                                        ACC)
                o10, m10, v10 = _corner(value_ptr, row_base, start, y0 + 1, x0, hl, wl, d, q_mask, d_mask, H, D,
                                        ACC)
                o11, m11, v11 = _corner(value_ptr, row_base, start, y0 + 1, x0 + 1, hl, wl, d, q_mask, d_mask, H,
                                        D, ACC)
                c00 = (1 - fy) * (1 - fx)
                c01 = (1 - fy) * fx
                c10 = fy * (1 - fx)
                c11 = fy * fx
                sample = c00[:, None] * v00 + c01[:, None] * v01 + c10[:, None] * v10 + c11[:, None] * v11
                # d sample / d fx and d fy (pixel units)
                dsx = (1 - fy)[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
                dsy = (1 - fx)[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
                tl.store(grad_attn_ptr + lp, tl.sum(sample * go, axis=1).to(grad_attn_ptr.dtype.element_ty),
                         mask=q_mask)
                gx = a * wl * tl.sum(dsx * go, axis=1)
                gy = a * hl * tl.sum(dsy * go, axis=1)
                tl.store(grad_loc_ptr + 2 * lp, gx.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
                tl.store(grad_loc_ptr + 2 * lp + 1, gy.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
                ago = a[:, None] * go
                tl.atomic_add(grad_value_ptr + o00, c00[:, None] * ago, mask=m00)
                tl.atomic_add(grad_value_ptr + o01, c01[:, None] * ago, mask=m01)
                tl.atomic_add(grad_value_ptr + o10, c10[:, None] * ago, mask=m10)
                tl.atomic_add(grad_value_ptr + o11, c11[:, None] * ago, mask=m11)


def _launch_config(num_queries: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): all channels of a head in one program, about 2048 (query, channel) pairs per program."""
    block_d = triton.next_power_of_2(head_dim)
    block_q = max(1, min(triton.next_power_of_2(num_queries), max(16, 2048 // block_d), 128))
    return block_q, block_d


def _accumulator(*tensors: Tensor):
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


class _MSDeformAttnFunction(torch.autograd.Function):
    """autograd wrapper of the two kernels; inputs already checked and contiguous."""

    @staticmethod
    def forward(ctx, value, shapes, starts, locations, weights):
        b, s, heads, head_dim = value.shape
        nq, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
        out = value.new_empty(b, nq, heads, head_dim)
        block_q, block_d = _launch_config(nq, head_dim)
        acc = _accumulator(value, locations, weights)
        grid = (triton.cdiv(nq, block_q), b * heads)
        _forward_kernel[grid](value, shapes, starts, locations, weights, out, s, nq, heads, head_dim, levels, points,
                              block_q, block_d, acc)
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return out.view(b, nq, heads * head_dim)

    @staticmethod
    def backward(ctx, grad_out):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        b, s, heads, head_dim = value.shape
        nq, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
        acc = _accumulator(value, locations, weights)
        acc_dtype = torch.float64 if acc == tl.float64 else torch.float32
        grad_out = grad_out.contiguous()
        grad_value = torch.zeros(value.shape, dtype=acc_dtype, device=value.device)   # atomic adds: wide buffer
        grad_locations = torch.empty_like(locations)
        grad_weights = torch.empty_like(weights)
        block_q, block_d = _launch_config(nq, head_dim)
        grid = (triton.cdiv(nq, block_q), b * heads)
        _backward_kernel[grid](value, shapes, starts, locations, weights, grad_out, grad_value, grad_locations,
                               grad_weights, s, nq, heads, head_dim, levels, points, block_q, block_d, acc)
        return grad_value.to(value.dtype), None, None, grad_locations, grad_weights


def ms_deform_attn_triton(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor | None,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The Triton kernel behind :func:`.ms_deform_attn.ms_deform_attn_sample`'s contract.

    Args:
        value: (B, S, H, Dh) per-head values, levels flattened row-major and concatenated.
        spatial_shapes: (L, 2) integer ``(h_l, w_l)``.
        level_start_index: (L,) first token of each level, checked against ``spatial_shapes`` (or None).
        sampling_locations: (B, Nq, H, L, P, 2) normalised ``(x, y)``, pixel centres at ``(col + 0.5) / w_l``.
        attention_weights: (B, Nq, H, L, P).

    Returns:
        (B, Nq, H * Dh) in ``value``'s dtype; gradients flow to value, locations and weights.

    Raises:
        RuntimeError: Triton is missing or the tensors are on a device it cannot run on.
        ValueError: inconsistent shapes (the same checks and messages as the PyTorch path).
    """
    if triton is None:
        raise RuntimeError("ms_deform_attn_triton: triton is not installed (pip install triton, or use the "
                           "PyTorch path: set_ms_deform_attn_backend('pytorch'))")
    if not triton_usable_on(value.device):
        raise RuntimeError(f"ms_deform_attn_triton: tensors are on {value.device}; the kernel runs on CUDA (or on "
                           "CPU under Triton's interpreter, TRITON_INTERPRET=1 set before triton is imported)")
    levels = check_inputs(value, sampling_locations, attention_weights, spatial_shapes, level_start_index)
    b, s, heads, _ = value.shape
    _, nq, _, num_levels, num_points, _ = sampling_locations.shape
    for t, name in ((sampling_locations, "sampling_locations"), (attention_weights, "attention_weights")):
        if t.device != value.device:
            raise ValueError(f"{name} is on {t.device} but value is on {value.device}")
    if num_levels == 0 or nq == 0 or b == 0:
        return value.new_zeros(b, nq, value.shape[2] * value.shape[3])
    shapes = torch.tensor([[h, w] for _, h, w in levels], dtype=torch.int32, device=value.device)
    starts = torch.tensor([start for start, _, _ in levels], dtype=torch.int32, device=value.device)
    return _MSDeformAttnFunction.apply(value.contiguous(), shapes, starts, sampling_locations.contiguous(),
                                       attention_weights.contiguous())
