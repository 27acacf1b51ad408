"""Hungarian matching between DETR predictions and ground-truth boxes."""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from ..precision import float32_policy

__all__ = ["HungarianMatcher", "focal_class_cost", "solve_assignment"]


def focal_class_cost(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal-loss matching cost (Deformable/Conditional DETR).

    logits: (Q, C) raw class logits; labels: (T,) int -> cost (Q, T), lower is better:
    the positive focal term minus the negative one for the target class.
    """
    prob = logits.sigmoid()[:, labels]
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos - neg


def solve_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of a (rows, cols) cost matrix with scipy.

    Returns (row_ids, col_ids) int64 tensors on the CPU, sorted by row. Non-finite costs
    are rejected with a clear error instead of scipy's generic one.
    """
    cost = cost.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(cost).all():
        raise FloatingPointError(
            "Matching cost contains NaN/inf; predictions have diverged (check the learning rate "
            "and gradient clipping)."
        )
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """One-to-one matching of queries to targets, per image.

    cost = cost_class * C_cls + cost_bbox * L1(cxcywh) + cost_giou * (-GIoU).

    ``class_cost`` selects the classification term: ``"focal"`` (fine-tuning with sigmoid
    focal loss) or ``"objectness"`` (-p(object) from a softmax over {object, no-object},
    used by DisCo pre-training).

    forward(pred_logits (B, Q, C), pred_boxes (B, Q, 4) normalised cxcywh, targets) where
    targets is a list of B dicts with "labels" (T_b,) int64 and "boxes" (T_b, 4) normalised
    cxcywh. Returns a list of B pairs (query_ids, target_ids), int64 CPU tensors of equal
    length min(Q, T_b); an image without boxes gives two empty tensors.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 class_cost: str = "focal", focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if class_cost not in ("focal", "objectness"):
            raise ValueError(f"class_cost must be 'focal' or 'objectness', got {class_cost!r}")
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("All matching costs are 0; at least one must be positive.")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.class_cost = class_cost
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def cost_matrix(self, logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """Matching cost of one image: (Q, C), (Q, 4), (T,), (T, 4) -> (Q, T)."""
        logits, boxes, tgt_boxes = logits.float(), boxes.float(), tgt_boxes.float()
        if self.class_cost == "focal":
            c_cls = focal_class_cost(logits, tgt_labels, self.focal_alpha, self.focal_gamma)
        else:
            c_cls = -logits.softmax(-1)[:, tgt_labels]
        c_l1 = torch.cdist(boxes, tgt_boxes, p=1)
        c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        return self.cost_class * c_cls + self.cost_bbox * c_l1 + self.cost_giou * c_giou

    @torch.no_grad()
    @float32_policy  # costs in float32 under AMP (modeling/precision.py)
    def forward(self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        pred_logits, pred_boxes = pred_logits.float(), pred_boxes.float()
        num_queries = pred_logits.shape[1]
        indices = []
        for b, tgt in enumerate(targets):
            num_targets = len(tgt["labels"])
            if num_targets > num_queries:
                raise ValueError(
                    f"Image {b} of the batch has {num_targets} boxes but the detector has only "
                    f"{num_queries} queries; raise num_queries or filter the dataset."
                )
            if num_targets == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(pred_logits[b], pred_boxes[b], tgt["labels"], tgt["boxes"])
            indices.append(solve_assignment(cost))
        return indices
