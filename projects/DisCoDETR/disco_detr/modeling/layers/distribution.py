"""D-FINE's edge distributions (Peng et al. 2025, section 3): the non-uniform bin values W(n), edge distances
to boxes and back, and the two-bin targets of the fine-grained localisation loss.

Coordinates: boxes are normalised (cx, cy, w, h) unless named xyxy. An edge lies at ``centre -+ (reg_scale / 2 +
distance) * anchor_size / reg_scale``: distance 0 puts it on the anchor box's own edge.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .box_ops import box_xyxy_to_cxcywh

__all__ = ["box_to_distance", "distance_to_box", "distribution_targets", "weighting_function"]


def weighting_function(max_num_bins: int, up: float, reg_scale: float, device=None,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """D-FINE's non-uniform bin values W(n), n = 0..max_num_bins (eq. 4): ``-2a, -(s^k - 1) ..., 0, ...,
    s^k - 1, 2a`` with ``a = |up| * |reg_scale|`` and ``s = (a + 1)^(2 / (bins - 2))``, k = bins/2 - 1 ... 1:
    fine steps near 0, coarse towards the ends. Returns (max_num_bins + 1,)."""
    a = abs(up) * abs(reg_scale)
    step = (a + 1) ** (2 / (max_num_bins - 2))
    half = [step ** k - 1 for k in range(1, max_num_bins // 2)]
    values = [-2 * a] + [-v for v in reversed(half)] + [0.0] + half + [2 * a]
    return torch.tensor(values, device=device, dtype=dtype)


def distance_to_box(anchor: Tensor, distance: Tensor, reg_scale: float) -> Tensor:
    """Edges at ``distance`` (..., 4) (left, top, right, bottom, in units of ``anchor_wh / reg_scale``, offset
    by half the anchor) around ``anchor`` (..., 4) cxcywh -> the box (..., 4) cxcywh."""
    s = abs(reg_scale)
    cx, cy, w, h = anchor.unbind(-1)
    x0 = cx - (0.5 * s + distance[..., 0]) * (w / s)
    y0 = cy - (0.5 * s + distance[..., 1]) * (h / s)
    x1 = cx + (0.5 * s + distance[..., 2]) * (w / s)
    y1 = cy + (0.5 * s + distance[..., 3]) * (h / s)
    return box_xyxy_to_cxcywh(torch.stack([x0, y0, x1, y1], -1))


def box_to_distance(anchor: Tensor, box_xyxy: Tensor, reg_scale: float) -> Tensor:
    """The inverse of :func:`distance_to_box`: (P, 4) cxcywh anchors and (P, 4) xyxy boxes -> (P, 4) distances
    (left, top, right, bottom) in the same units."""
    s = abs(reg_scale)
    cx, cy, w, h = anchor.unbind(-1)
    unit_w, unit_h = w / s + 1e-16, h / s + 1e-16
    return torch.stack([(cx - box_xyxy[:, 0]) / unit_w, (cy - box_xyxy[:, 1]) / unit_h,
                        (box_xyxy[:, 2] - cx) / unit_w, (box_xyxy[:, 3] - cy) / unit_h], -1) - 0.5 * s


def distribution_targets(distance: Tensor, bin_values: Tensor) -> tuple[Tensor, Tensor]:
    """Each distance (P,) between two bins of ``bin_values`` (bins + 1,), ascending -> (left bin (P,) long, weight
    of the right bin (P,)); below the first bin: (0, 0), at or above the last: (bins - 1, 1)."""
    bins = bin_values.numel() - 1
    index = (bin_values[None] <= distance[:, None]).sum(1) - 1
    left = index.clamp(0, bins - 1)
    to_left = (distance - bin_values[left]).abs()
    to_right = (bin_values[left + 1] - distance).abs()
    weight_right = to_left / (to_left + to_right)
    weight_right = torch.where(index < 0, torch.zeros_like(weight_right), weight_right)
    weight_right = torch.where(index >= bins, torch.ones_like(weight_right), weight_right)
    return left, weight_right
