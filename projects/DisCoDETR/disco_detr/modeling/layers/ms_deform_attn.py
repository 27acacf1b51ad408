"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021): the module, the PyTorch path and the dispatch.

The PyTorch path (:func:`ms_deform_attn_sample`) samples with ``F.grid_sample`` per level, which runs on every
device and dtype PyTorch supports (float16/bfloat16/float32/float64 on CPU and CUDA) and is the reference. Unlike
a fused kernel it materialises every level's samples, (B*H, Dh, P, Nq) per level, before the weighted sum; the
cost against dense attention is measured by ``tools/benchmarks/benchmark_ms_deform_attn.py``. On CUDA the
dispatch (:func:`ms_deform_attn`, end of this file) takes the Triton kernel of ``ms_deform_attn_triton.py``
instead, once the kernel has passed a self-check against this path on that device and dtype (docs/gpu.md).
The PyTorch path's sampling can instead run by index gathers and corner weights (:func:`bilinear_sample_gather`,
``set_ms_deform_attn_sampling("gather")``): the same numbers, and an ONNX graph without ``GridSample`` for
runtimes that miscompute it (TensorRT; docs/deployment.md).

Conventions used throughout this file:

* A multi-scale feature map is flattened level by level, each level row-major (index ``y * w + x``), and
  the levels are concatenated: ``S = sum_l h_l * w_l`` tokens. ``spatial_shapes`` (L, 2) holds ``(h_l, w_l)``
  and ``level_start_index`` (L,) the first token of each level (``[0, h0*w0, h0*w0 + h1*w1, ...]``).
* Sampling locations are normalised ``(x, y)`` in [0, 1] of each level's map, with pixel centres at
  ``((col + 0.5) / w, (row + 0.5) / h)`` (``align_corners=False``). Bilinear interpolation; the map is
  zero outside (a point half a pixel outside the border still gets half of the border pixel).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .ms_deform_attn_checks import check_inputs
from .recording import emit, is_recording

__all__ = ["MS_DEFORM_ATTN_SAMPLINGS", "MultiScaleDeformableAttention", "bilinear_sample_gather", "kernel_self_check",
           "ms_deform_attn", "ms_deform_attn_sample", "ms_deform_attn_sampling", "set_ms_deform_attn_backend",
           "set_ms_deform_attn_sampling"]


class _WeightedPointSum(torch.autograd.Function):
    """``(sampled * weights).sum(-2)`` for sampled (N, C, P, Nq) and weights (N, 1, P, Nq) -> (N, C, Nq).

    Autograd of the broadcast product writes a (N, C, P, Nq) temporary in forward and another one (before a
    reduction over C) for the weights' gradient in backward; with few points (P = 4) it is cheaper to run
    over the points one at a time: forward accumulates ``addcmul_`` into the (N, C, Nq) result, backward
    reduces ``grad * sampled[:, :, p]`` over C per point. Same sums in the same order of terms as a
    sequential sum over P (float rounding of the reduction order only). The backward is written in
    differentiable operations, so double backward works.
    """

    @staticmethod
    def forward(ctx, sampled: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(sampled, weights)
        return _point_sum(sampled, weights)

    @staticmethod
    def backward(ctx, grad: Tensor):
        sampled, weights = ctx.saved_tensors
        grad_sampled = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_sampled = grad.unsqueeze(-2) * weights                                    # (N, C, P, Nq)
        if ctx.needs_input_grad[1]:
            grad_weights = torch.stack([(grad * sampled[:, :, p]).sum(1) for p in range(sampled.shape[2])],
                                       1).unsqueeze(1)                                     # (N, 1, P, Nq)
        return grad_sampled, grad_weights


def _point_sum(sampled: Tensor, weights: Tensor) -> Tensor:
    """The forward of :class:`_WeightedPointSum`, one point at a time (P >= 1)."""
    out = torch.mul(sampled[:, :, 0], weights[:, :, 0])
    for p in range(1, sampled.shape[2]):
        out.addcmul_(sampled[:, :, p], weights[:, :, p])
    return out


def _weighted_point_sum(sampled: Tensor, weights: Tensor) -> Tensor:
    """sum over P of sampled (N, C, P, Nq) * weights (N, 1, P, Nq) -> (N, C, Nq); see :class:`_WeightedPointSum`.

    Without gradients (inference, export) the loop runs directly, outside the autograd Function."""
    if sampled.shape[2] == 0:
        return sampled.new_zeros(sampled.shape[0], sampled.shape[1], sampled.shape[3])
    if torch.is_grad_enabled() and (sampled.requires_grad or weights.requires_grad):
        return _WeightedPointSum.apply(sampled, weights)
    return _point_sum(sampled, weights)


def _grid_sample(image: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample`` bilinear, zero padding, ``align_corners=False``: image (N, C, h, w), grid (N, Ho, Wo, 2)
    (x, y) in [-1, 1] (the outer pixel edges) -> (N, C, Ho, Wo)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def bilinear_sample_gather(image: Tensor, grid: Tensor) -> Tensor:
    """:func:`_grid_sample` by index gathers and corner weights: no ``GridSample`` op in an exported graph.

    image (N, C, h, w); grid (N, Ho, Wo, 2) normalised (x, y) in [-1, 1], -1 and 1 on the outer pixel edges
    (``align_corners=False``) -> (N, C, Ho, Wo). Corners outside the map count as zeros (zero padding). The
    pixel coordinates are unnormalised with grid_sample's own formula ``((g + 1) * size - 1) / 2``, so both
    paths see the same coordinates; gradients flow to ``image`` (through the gather) and to ``grid`` (through
    the corner weights, the floor being piecewise constant). Every shape is read from the tensors, so a traced
    graph keeps h and w symbolic. Indices are computed in the grid's float dtype (exact below 2**24 pixels per
    map in float32).
    """
    n, c, h, w = image.shape
    ho, wo = grid.shape[1], grid.shape[2]
    x = ((grid[..., 0] + 1) * w - 1) / 2                                     # (N, Ho, Wo) pixel coordinates,
    y = ((grid[..., 1] + 1) * h - 1) / 2                                     # pixel centres on integers
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], 1)                            # (N, 4, Ho, Wo): the 4 corners
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], 1)
    corner_weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    corner_weights = corner_weights * inside.to(corner_weights.dtype)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).long().view(n, 1, -1)   # (N, 1, 4*Ho*Wo) row-major
    corners = image.reshape(n, c, -1).gather(2, index.expand(n, c, index.shape[-1])).view(n, c, 4, ho, wo)
    return (corners * corner_weights[:, None].to(corners.dtype)).sum(2)


def ms_deform_attn_sample(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor | None,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The core of multi-scale deformable attention: bilinear sampling and the weighted sum.

    Args:
        value: (B, S, H, Dh), per-head values of the flattened multi-scale map (see the module docstring).
        spatial_shapes: (L, 2) integer ``(h_l, w_l)``.
        level_start_index: (L,) first token of each level; checked against ``spatial_shapes`` (or None).
        sampling_locations: (B, Nq, H, L, P, 2) normalised ``(x, y)`` in [0, 1] of level l (pixel centre of
            column x at ``(x + 0.5) / w_l``); points outside the map sample zeros (partially, near the border).
        attention_weights: (B, Nq, H, L, P); used as given (the module normalises them by a softmax).

    Returns:
        (B, Nq, H * Dh): ``sum_{l,p} weight[b,q,h,l,p] * bilinear(value_l[b,:,h], location[b,q,h,l,p])``,
        heads concatenated in order. Sampling runs in the promoted dtype of ``value`` and
        ``sampling_locations`` (e.g. float32 locations with a float16 value sample in float32, which keeps
        locations exact to a fraction of a pixel); the result has ``value``'s dtype.
    """
    levels = check_inputs(value, sampling_locations, attention_weights, spatial_shapes, level_start_index)
    b, s, num_heads, head_dim = value.shape
    _, nq, _, num_levels, num_points, _ = sampling_locations.shape

    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    # grid_sample wants an (N, C, h, w) input and an (N, Hout, Wout, 2) grid in [-1, 1]; N = B * H folds the
    # heads into the batch. With align_corners=False, -1 and 1 are the outer pixel edges, so
    # grid = 2 * location - 1 is exactly the normalised [0, 1] convention above.
    # Layout, chosen for speed on CPU: one copy puts the levels first and the points before the queries, so each
    # level's grid is a contiguous (B*H, P, Nq, 2) block (grid_sample's CPU kernel vectorises along Wout = Nq;
    # a strided grid or rows of only P points run it about twice as slow, forward and backward) and the weighted
    # sum runs over P with Nq contiguous. Levels are taken apart with split / unbind (views), not indexing, so
    # backward concatenates the levels' gradients once instead of zero-filling a full-size gradient per level.
    grid = (2 * sampling_locations.to(dtype) - 1).permute(3, 0, 2, 4, 1, 5).reshape(
        num_levels, b * num_heads, num_points, nq, 2).unbind(0)                       # L x (B*H, P, Nq, 2)
    weights = attention_weights.to(dtype).permute(3, 0, 2, 4, 1).reshape(
        num_levels, b * num_heads, 1, num_points, nq).unbind(0)                       # L x (B*H, 1, P, Nq)
    sample = bilinear_sample_gather if _backend["sampling"] == "gather" else _grid_sample
    out = None
    if levels:
        values = value.to(dtype).permute(0, 2, 3, 1).reshape(b * num_heads, head_dim, s).split(
            [h * w for _, h, w in levels], dim=-1)                                    # L x (B*H, Dh, h_l*w_l)
        for lvl, (_, h, w) in enumerate(levels):
            sampled = sample(values[lvl].view(b * num_heads, head_dim, h, w), grid[lvl])  # (B*H, Dh, P, Nq)
            # Summing level by level keeps only one level's samples alive at a time in inference.
            term = _weighted_point_sum(sampled, weights[lvl])                         # (B*H, Dh, Nq)
            out = term if out is None else out.add_(term)
    if out is None:  # L == 0: nothing to attend to
        out = value.new_zeros(b * num_heads, head_dim, nq, dtype=dtype)
    return out.view(b, num_heads * head_dim, nq).transpose(1, 2).contiguous().to(value.dtype)


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention as in Deformable DETR (no residual, no dropout: the caller's layer adds them).

    Each query predicts, per head h, level l and point p, an offset and a weight; it samples the projected
    value of level l at ``reference + offset`` and sums the samples with the softmax (over levels x points,
    per head) of the weights. Parameter names and row layouts follow Deformable DETR / detrex, so their
    checkpoints load by a plain copy:

    * ``sampling_offsets``: Linear(d, H*L*P*2), output rows ordered (head, level, point, xy);
    * ``attention_weights``: Linear(d, H*L*P), rows (head, level * point);
    * ``value_proj``, ``output_proj``: Linear(d, d).

    forward(query (B, Nq, d), reference_points (B, Nq, L, 2) normalised (x, y) or (B, Nq, L, 4) normalised
    (cx, cy, w, h), value (B, S, d) flattened multi-scale map, spatial_shapes (L, 2) (h, w),
    level_start_index (L,), padding_mask (B, S) bool, True on padding, or None) -> (B, Nq, d).

    Sampling locations: 2-d references ``ref + offset / (w_l, h_l)`` (offsets in pixels of level l);
    4-d references ``ref_xy + offset / P * ref_wh * 0.5`` (offsets in units of half the box per point).

    Inside :func:`~.recording.record_attention` it emits site ``"deformable"`` with ``locations``
    (B, Nq, H, L, P, 2), ``weights`` (B, Nq, H, L, P) (softmax-normalised) and ``spatial_shapes`` (L, 2).
    """

    def __init__(self, d_model: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if min(num_heads, num_levels, num_points) <= 0:
            raise ValueError(f"num_heads, num_levels and num_points must be positive, got "
                             f"{num_heads}, {num_levels}, {num_points}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: head h starts with its points on a ray at angle 2*pi*h/H, point p at distance
        p + 1 (in the max-norm: (cos, sin) divided by its largest absolute coordinate, so 8 heads point to the 8
        neighbours of a pixel); uniform attention weights; xavier value/output projections with zero bias."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values                      # (H, 2)
        scale = torch.arange(1, self.num_points + 1, dtype=torch.float64)
        grid = directions[:, None, None, :] * scale[None, None, :, None]                             # (H, 1, P, 2)
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, num_levels={self.num_levels}, " \
               f"num_points={self.num_points}"

    def _check_inputs(self, query: Tensor, reference_points: Tensor, value: Tensor,
                      padding_mask: Tensor | None) -> None:
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be (B, Nq, d={self.d_model}), got shape {tuple(query.shape)}")
        b, nq = query.shape[:2]
        if value.dim() != 3 or value.shape[0] != b or value.shape[-1] != self.d_model:
            raise ValueError(f"value must be (B={b}, S, d={self.d_model}), got shape {tuple(value.shape)}")
        if (reference_points.dim() != 4 or tuple(reference_points.shape[:3]) != (b, nq, self.num_levels)
                or reference_points.shape[-1] not in (2, 4)):
            raise ValueError(f"reference_points must be (B={b}, Nq={nq}, L={self.num_levels}, 2 or 4), "
                             f"got shape {tuple(reference_points.shape)}")
        if padding_mask is not None and tuple(padding_mask.shape) != tuple(value.shape[:2]):
            raise ValueError(f"padding_mask must be (B, S) = {tuple(value.shape[:2])}, got {tuple(padding_mask.shape)}")
        if padding_mask is not None and padding_mask.dtype != torch.bool:
            raise ValueError(f"padding_mask must be bool (True on padding), got dtype {padding_mask.dtype}")

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """See the class docstring for shapes and conventions. Returns (B, Nq, d)."""
        self._check_inputs(query, reference_points, value, padding_mask)
        shapes = torch.as_tensor(spatial_shapes, device=reference_points.device)
        if shapes.dim() != 2 or shapes.shape[0] != self.num_levels:
            raise ValueError(f"spatial_shapes must be (L={self.num_levels}, 2), got shape {tuple(shapes.shape)}")
        b, nq, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, value.shape[1], heads, self.d_model // heads)

        offsets = self.sampling_offsets(query).view(b, nq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, nq, heads, levels * points)
        weights = weights.softmax(-1).view(b, nq, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # (w_l, h_l) per level: offsets are in pixels of their level.
            normaliser = shapes.flip(-1).to(offsets.dtype)                                     # (L, 2)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        else:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5)

        if is_recording():   # analysis plots: site "deformable" (see .recording)
            emit("deformable", self, locations=locations, weights=weights, spatial_shapes=shapes)
        out = ms_deform_attn(value, shapes, level_start_index, locations, weights)
        return self.output_proj(out)


# ------------------------------------------------------------------------------------------------ dispatch
# "auto": the Triton kernel (ms_deform_attn_triton.py) on CUDA when triton imports and the kernel passes its
# self-check on that (device, dtypes), else this file's PyTorch path; "pytorch" / "triton" force one (no check).
# Set by train.ms_deform_attn_backend (the Trainer), by set_ms_deform_attn_backend, or by the environment
# variable DISCO_MS_DEFORM_ATTN_BACKEND.
MS_DEFORM_ATTN_BACKENDS = ("auto", "pytorch", "triton")
# verdicts: (device, value dtype, locations dtype) -> None (the kernel passed) or the cause of its failure
# The PyTorch path's bilinear sampling: "grid_sample" (F.grid_sample, the default) or "gather"
# (:func:`bilinear_sample_gather`, index gathers and corner weights: no GridSample op in an ONNX graph, for
# runtimes whose GridSample is wrong or missing, e.g. TensorRT; docs/deployment.md). Both give the same numbers.
# Set by set_ms_deform_attn_sampling, the context manager ms_deform_attn_sampling, or the environment variable
# DISCO_MS_DEFORM_ATTN_SAMPLING.
MS_DEFORM_ATTN_SAMPLINGS = ("grid_sample", "gather")
_backend = {"name": os.environ.get("DISCO_MS_DEFORM_ATTN_BACKEND", "auto"), "logged": set(), "verdicts": {},
            "sampling": os.environ.get("DISCO_MS_DEFORM_ATTN_SAMPLING", "grid_sample")}

#: Largest relative difference (to max(1, |reference|)) the self-check accepts, by value dtype: a few units in
#: the last place of the output's dtype (float32 accumulation in the kernel against float64 in the reference).
SELF_CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 8e-3, torch.bfloat16: 6.4e-2}
# The self-check problem's level sizes (h, w), cycled over the caller's L levels: odd, non-square, 1-pixel sides.
_SELF_CHECK_LEVELS = ((5, 7), (3, 3), (1, 2), (2, 1), (4, 3))


def set_ms_deform_attn_backend(name: str) -> None:
    """Chooses the sampling backend of every MultiScaleDeformableAttention: "auto", "pytorch" or "triton"."""
    if name not in MS_DEFORM_ATTN_BACKENDS:
        raise ValueError(f"ms_deform_attn backend must be one of {MS_DEFORM_ATTN_BACKENDS}, got {name!r}")
    _backend["name"] = name


def set_ms_deform_attn_sampling(name: str) -> None:
    """Chooses the PyTorch path's bilinear sampling: "grid_sample" or "gather" (same numbers, see above)."""
    if name not in MS_DEFORM_ATTN_SAMPLINGS:
        raise ValueError(f"ms_deform_attn sampling must be one of {MS_DEFORM_ATTN_SAMPLINGS}, got {name!r}")
    _backend["sampling"] = name


@contextlib.contextmanager
def ms_deform_attn_sampling(name: str):
    """Within the block, the PyTorch path samples with ``name`` ("grid_sample" or "gather"); restored after."""
    before = _backend["sampling"]
    set_ms_deform_attn_sampling(name)
    try:
        yield
    finally:
        _backend["sampling"] = before


def auto_prefers_triton(device: torch.device) -> bool:
    """Whether "auto" tries the kernel on ``device``: CUDA with triton importable (then the self-check decides)."""
    from .ms_deform_attn_triton import triton_usable_on

    return device.type == "cuda" and triton_usable_on(device)


def ms_deform_attn_backend(device: torch.device) -> str:
    """The backend ("pytorch" or "triton") that runs on tensors of ``device`` under the current setting, before
    the kernel's self-check (see :func:`ms_deform_attn`); the choice is logged once per (setting, device type)."""
    from .ms_deform_attn_triton import triton_available, triton_usable_on

    name = _backend["name"]
    if name not in MS_DEFORM_ATTN_BACKENDS:
        raise ValueError(f"DISCO_MS_DEFORM_ATTN_BACKEND must be one of {MS_DEFORM_ATTN_BACKENDS}, got {name!r}")
    if name == "auto":
        chosen = "triton" if auto_prefers_triton(device) else "pytorch"
        why = ("CUDA with triton, after its self-check" if chosen == "triton" else
               f"{device.type}" if device.type != "cuda" else "triton is not importable")
    elif name == "triton" and not triton_usable_on(device):
        raise RuntimeError(f"ms_deform_attn backend 'triton' cannot run on {device} "
                           f"({'no triton' if not triton_available() else 'needs CUDA, or TRITON_INTERPRET=1 on CPU'}); "
                           "use backend 'auto' or 'pytorch'")
    else:
        chosen, why = name, "set explicitly"
    key = (name, device.type)
    if key not in _backend["logged"]:
        _backend["logged"].add(key)
        logging.getLogger("detectron2").info("Multi-scale deformable attention on %s: %s path (%s)", device.type,
                                             "Triton kernel" if chosen == "triton" else "PyTorch grid_sample", why)
    return chosen


def _self_check_problem(device: torch.device, value_dtype: torch.dtype, locations_dtype: torch.dtype, heads: int,
                        head_dim: int, levels: int, points: int):
    """A small random problem with the caller's H, Dh, L, P: value (1, S, H, Dh), spatial_shapes (L, 2),
    level_start_index (L,), locations (1, Nq, H, L, P, 2) normalised (x, y), weights (1, Nq, H, L, P), grad_out
    (1, Nq, H * Dh), on ``device``. Locations lie 0.2-0.8 pixel away from pixel-centre lines (where bilinear
    sampling has kinks and the two paths may take different one-sided derivatives), inside, across the border
    and outside the maps. Drawn from a private generator: the process's random stream is left alone."""
    gen = torch.Generator().manual_seed(20261207)
    shapes = torch.tensor([_SELF_CHECK_LEVELS[lvl % len(_SELF_CHECK_LEVELS)] for lvl in range(levels)])
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    # more queries than one program's block (``_launch_config``), so a full and a masked block both run
    nq = min(max(16, 2048 // (1 << max(head_dim - 1, 0).bit_length())), 128) + 5
    value = torch.randn(1, int(areas.sum()), heads, head_dim, generator=gen).to(value_dtype)
    size = shapes.flip(-1).double()                                                     # (L, 2) as (w, h)
    cells = torch.randint(-2, int(shapes.max()) + 1, (1, nq, heads, levels, points, 2), generator=gen).double()
    frac = 0.2 + 0.6 * torch.rand(cells.shape, generator=gen, dtype=torch.float64)
    locations = ((cells + frac + 0.5) / size[:, None, :]).to(locations_dtype)
    weights = torch.rand(1, nq, heads, levels, points, generator=gen).to(locations_dtype)
    grad_out = torch.randn(1, nq, heads * head_dim, generator=gen).to(value_dtype)
    return [t.to(device) for t in (value, shapes, starts, locations, weights, grad_out)]


def kernel_self_check(device: torch.device, value_dtype: torch.dtype, locations_dtype: torch.dtype, heads: int,
                      head_dim: int, levels: int, points: int) -> str | None:
    """Runs the Triton kernel's forward and backward on a small random problem (:func:`_self_check_problem`) and
    compares the output and the gradients of value, locations and weights with the float64 PyTorch path on the
    same (rounded) inputs. Returns None when every difference is within :data:`SELF_CHECK_TOLERANCE` of
    ``value_dtype``, else the cause in one line (the kernel raised: its exception; a mismatch: which tensor and by
    how much). Costs one compilation of each kernel for these sizes and one tiny launch of each."""
    from .ms_deform_attn_triton import ms_deform_attn_triton  # looked up at each check (tests swap it)

    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        value, shapes, starts, locations, weights, grad_out = _self_check_problem(
            device, value_dtype, locations_dtype, heads, head_dim, levels, points)
        inputs = [t.detach().requires_grad_() for t in (value, locations, weights)]
        try:
            out = ms_deform_attn_triton(inputs[0], shapes, starts, inputs[1], inputs[2])
            got = [out, *torch.autograd.grad(out, inputs, grad_out)]
        except Exception as error:  # a compile error, a launch failure, a wrong shape: the kernel is not usable
            first = (str(error).strip().splitlines() or [""])[0][:300]
            return f"the kernel raised {type(error).__name__}: {first}"
        ref_inputs = [t.detach().cpu().double().requires_grad_() for t in (value, locations, weights)]
        ref_out = ms_deform_attn_sample(ref_inputs[0], shapes.cpu(), starts.cpu(), ref_inputs[1], ref_inputs[2])
        want = [ref_out, *torch.autograd.grad(ref_out, ref_inputs, grad_out.cpu().double())]
    tol = SELF_CHECK_TOLERANCE.get(value_dtype, 1e-4)
    for name, g, w in zip(("forward output", "value gradient", "locations gradient", "weights gradient"), got, want):
        if tuple(g.shape) != tuple(w.shape):
            return f"the {name} has shape {tuple(g.shape)}, the PyTorch path's {tuple(w.shape)}"
        w = w.detach()
        diff = ((g.detach().cpu().double() - w).abs().max() / max(1.0, float(w.abs().max()))).item()
        if not diff <= tol:  # NaN fails too
            return f"the {name} differs from the PyTorch path by {diff:.3g} (tolerance {tol:g} for {value_dtype})"
    return None


def kernel_trusted(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor) -> bool:
    """Whether "auto" may run the kernel on these inputs: the verdict of :func:`kernel_self_check` for
    (device, value dtype, locations dtype), computed on first use with the inputs' H, Dh, L, P and cached for the
    process. A failure logs one warning naming the cause; that (device, dtypes) then uses the PyTorch path."""
    key = (str(value.device), value.dtype, sampling_locations.dtype)
    if key not in _backend["verdicts"]:
        _, _, heads, head_dim = value.shape
        _, _, _, levels, points, _ = sampling_locations.shape
        cause = torch.compiler.disable(kernel_self_check)(value.device, value.dtype, sampling_locations.dtype,
                                                         heads, head_dim, levels, points)
        _backend["verdicts"][key] = cause
        log = logging.getLogger("detectron2")
        if cause is None:
            log.info("Multi-scale deformable attention: the Triton kernel passed its self-check on %s (value %s, "
                     "locations %s)", value.device, value.dtype, sampling_locations.dtype)
        else:
            log.warning("Multi-scale deformable attention: the Triton kernel failed its self-check on %s (value %s, "
                        "locations %s): %s. Using the PyTorch path there (train.ms_deform_attn_backend='triton' "
                        "forces the kernel without the check).", value.device, value.dtype,
                        sampling_locations.dtype, cause)
    return _backend["verdicts"][key] is None


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor | None,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """:func:`ms_deform_attn_sample`'s contract (same shapes and conventions) on the chosen backend.

    Precision policy (the same under AMP on either backend): autocast is off inside; sampling locations and
    attention weights are at least float32 (half-precision ones are cast up: a bfloat16 location is off by up to
    1/256 of the map); ``value`` is read in its own dtype (the autocast dtype under AMP); sums accumulate in
    float32 (float64 for float64 inputs); the result has ``value``'s dtype.

    Under "auto" the kernel runs only after :func:`kernel_trusted` (its self-check on this device and dtype).
    """
    half = (torch.float16, torch.bfloat16)
    if sampling_locations.dtype in half:
        sampling_locations = sampling_locations.float()
    if attention_weights.dtype in half:
        attention_weights = attention_weights.float()
    with torch.autocast(value.device.type, enabled=False):
        if ms_deform_attn_backend(value.device) == "triton" and (
                _backend["name"] == "triton" or kernel_trusted(value, sampling_locations, attention_weights)):
            from .ms_deform_attn_triton import ms_deform_attn_triton

            return ms_deform_attn_triton(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights)
        return ms_deform_attn_sample(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
