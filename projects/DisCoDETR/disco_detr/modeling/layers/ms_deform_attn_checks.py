"""The input rules every multi-scale deformable attention backend checks (PyTorch and Triton alike).

A multi-scale map is flattened level by level, each level row-major, and the levels concatenated:
``S = sum_l h_l * w_l`` tokens; ``spatial_shapes`` (L, 2) holds ``(h_l, w_l)`` and ``level_start_index`` (L,)
the first token of each level.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_inputs", "level_shapes", "level_sizes"]


def level_sizes(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple]:
    """``[(h_l, w_l), ...]`` of the (L, 2) ``spatial_shapes`` as Python ints; while tracing (ONNX export), 0-dim
    tensors read in the graph, so that an exported graph computes them for its own input size."""
    if torch.jit.is_tracing() and isinstance(spatial_shapes, Tensor):
        return [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]) for lvl in range(spatial_shapes.shape[0])]
    return [(int(h), int(w)) for h, w in torch.as_tensor(spatial_shapes).tolist()]


def level_shapes(spatial_shapes: Tensor | Sequence[Sequence[int]], level_start_index: Tensor | Sequence[int] | None,
                 num_tokens: int) -> list[tuple[int, int, int]]:
    """Checks the level layout and returns ``[(start, h, w), ...]`` as Python ints (one host sync on CUDA).

    While tracing (ONNX export) the values are 0-dim tensors read from ``spatial_shapes``, unchecked, so that the
    graph computes them (dynamic image size) instead of recording the example's sizes."""
    if torch.jit.is_tracing():
        levels, start = [], 0
        for h, w in level_sizes(spatial_shapes):
            levels.append((start, h, w))
            start = start + h * w
        return levels
    shapes = torch.as_tensor(spatial_shapes)
    if shapes.dim() != 2 or shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2) (h, w) per level, got shape {tuple(shapes.shape)}")
    if shapes.is_floating_point() or shapes.is_complex():
        raise ValueError(f"spatial_shapes must be integers, got dtype {shapes.dtype}")
    hw = [(int(h), int(w)) for h, w in shapes.tolist()]
    if any(h <= 0 or w <= 0 for h, w in hw):
        raise ValueError(f"spatial_shapes must be positive, got {hw}")
    starts = [0]
    for h, w in hw[:-1]:
        starts.append(starts[-1] + h * w)
    total = starts[-1] + hw[-1][0] * hw[-1][1] if hw else 0
    if total != num_tokens:
        raise ValueError(f"value has S={num_tokens} tokens but spatial_shapes {hw} give sum(h*w)={total}")
    if level_start_index is not None:
        given = [int(s) for s in torch.as_tensor(level_start_index).reshape(-1).tolist()]
        if given != starts:
            raise ValueError(f"level_start_index {given} does not match spatial_shapes {hw} (expected {starts})")
    return [(s, h, w) for s, (h, w) in zip(starts, hw)]


def check_inputs(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor, spatial_shapes,
                 level_start_index) -> list[tuple[int, int, int]]:
    """The shape rules of multi-scale deformable attention (every backend): value (B, S, H, Dh),
    sampling_locations (B, Nq, H, L, P, 2), attention_weights (B, Nq, H, L, P), L levels whose sizes sum
    to S. Returns the levels as ``[(start, h, w), ...]``; a broken rule is a ValueError naming it."""
    if value.dim() != 4:
        raise ValueError(f"value must be (B, S, H, Dh), got shape {tuple(value.shape)}")
    b, s, num_heads, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be (B, Nq, H, L, P, 2), got shape {tuple(sampling_locations.shape)}")
    _, nq, _, num_levels, num_points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != b or sampling_locations.shape[2] != num_heads:
        raise ValueError(f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
                         f"{tuple(value.shape)} (batch B={b}, heads H={num_heads})")
    if tuple(attention_weights.shape) != (b, nq, num_heads, num_levels, num_points):
        raise ValueError(f"attention_weights must be (B, Nq, H, L, P) = {(b, nq, num_heads, num_levels, num_points)}, "
                         f"got {tuple(attention_weights.shape)}")
    levels = level_shapes(spatial_shapes, level_start_index, s)
    if len(levels) != num_levels:
        raise ValueError(f"sampling_locations have L={num_levels} levels but spatial_shapes has {len(levels)}")
    return levels
