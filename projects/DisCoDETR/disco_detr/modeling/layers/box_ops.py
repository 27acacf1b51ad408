"""Box conversions and (generalised) IoU.

Conventions used across the project:

* ``cxcywh``: (centre x, centre y, width, height), normalised to [0, 1] by the un-padded
  image size. This is what DETR heads predict and what the losses compare.
* ``xyxy``: (x0, y0, x1, y1), either normalised or in pixels; the docstring of each caller
  says which. detectron2 ``Boxes`` are always xyxy pixels.
"""
import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "normalized_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy, same units."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh, same units."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def normalized_cxcywh(boxes: Tensor, image_sizes) -> Tensor:
    """Targets as DETR heads predict them: boxes of M images, xyxy in pixels, -> cxcywh normalised by
    each image's un-padded size.

    boxes (M, n, 4) xyxy pixels; image_sizes (M, 2) (h, w) per image, a tensor or a list of pairs ->
    (M, n, 4) normalised cxcywh, in the boxes' dtype.
    """
    hw = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=boxes.device).view(-1, 2)
    scale = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], -1)[:, None]
    return box_xyxy_to_cxcywh(boxes / scale)


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) area; inverted or empty boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter, area1[:, None] + area2[None, :] - inter


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M).

    Degenerate boxes (zero or negative extent) have zero area; the IoU of two of them is
    0 rather than NaN (``eps`` guards the division).
    """
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union.clamp(min=eps)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., 2019) of xyxy boxes: (N,4) x (M,4) -> (N,M).

    Values lie in [-1, 1]. Inverted boxes are treated as empty (area 0) instead of raising,
    so a diverging prediction gives a finite loss; the enclosing box of two points is
    guarded by ``eps`` so identical degenerate boxes give GIoU 0, not NaN.
    """
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / union.clamp(min=eps)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclosing = (rb - lt).clamp(min=0).prod(-1)
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps] so that 0 and 1 map to finite values."""
    x = x.clamp(min=eps, max=1 - eps)
    return torch.log(x / (1 - x))
