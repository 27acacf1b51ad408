"""Loss terms: sigmoid focal loss (Lin et al. 2017, eq. 5), varifocal loss (Zhang et al. 2021, eq. 2, RT-DETR's
classification loss) and the L1 + generalised IoU box loss of DETR (Carion et al. 2020, section 3.1)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["box_losses", "sigmoid_focal_loss", "varifocal_loss"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise ``-alpha_t (1 - p_t)^gamma log(p_t)``; logits and 0/1 targets of one shape (alpha < 0: none)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def varifocal_loss(logits: Tensor, onehot: Tensor, iou: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Element-wise varifocal loss.

    logits, onehot: (..., C); iou: (...,) the IoU of each query's box with its matched target (0 where
    unmatched). Target q = iou * onehot; weight = alpha * sigmoid(logits)^gamma * (1 - onehot) + q
    (the sigmoid detached); loss = weight * BCE(logits, q).
    """
    target = iou[..., None].to(logits.dtype) * onehot
    weight = alpha * logits.sigmoid().detach().pow(gamma) * (1 - onehot) + target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")


def box_losses(src: Tensor, tgt: Tensor, normaliser: float) -> tuple[Tensor, Tensor]:
    """Summed L1 and (1 - GIoU) of matched (P, 4) normalised cxcywh boxes, each divided by ``normaliser``."""
    loss_bbox = F.l1_loss(src, tgt, reduction="sum") / normaliser
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
    return loss_bbox, (1 - giou).sum() / normaliser
