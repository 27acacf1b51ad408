"""Set-prediction loss of the fine-tuning detectors (focal classification + L1 + GIoU)."""
from __future__ import annotations

import torch
from detectron2.utils import comm
from torch import Tensor, nn
from torch.nn import functional as F

from .layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .matching import HungarianMatcher
from .precision import float32_policy

__all__ = ["SetCriterion", "box_losses", "flatten_indices", "num_boxes_across_workers", "sigmoid_focal_loss"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017); logits and 0/1 targets of one shape."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def flatten_indices(indices: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image matches [(query_ids, target_ids)] -> flat (batch_ids, query_ids, target_ids) on ``device``."""
    batch_ids = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
    query_ids = torch.cat([q for q, _ in indices]).to(device)
    target_ids = torch.cat([t for _, t in indices]).to(device)
    return batch_ids, query_ids, target_ids


def box_losses(src: Tensor, tgt: Tensor, normaliser: float) -> tuple[Tensor, Tensor]:
    """Summed L1 and (1 - GIoU) of matched (P, 4) cxcywh boxes, each divided by ``normaliser``."""
    loss_bbox = F.l1_loss(src, tgt, reduction="sum") / normaliser
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)))
    return loss_bbox, (1 - giou).sum() / normaliser


def num_boxes_across_workers(targets: list[dict], device: torch.device) -> float:
    """Average number of target boxes per worker (at least 1), the loss normaliser."""
    num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(num)
    return max(num.item() / comm.get_world_size(), 1.0)


class SetCriterion(nn.Module):
    """DETR losses for one decoder output stack.

    forward(outputs, targets):
      outputs: {"pred_logits": (L, B, Q, C), "pred_boxes": (L, B, Q, 4) normalised cxcywh},
        L decoder layers, the last one being the final prediction;
      targets: list of B dicts with "labels" (T_b,) int64 and "boxes" (T_b, 4) normalised
        cxcywh (by the un-padded image size).
    Returns weighted losses: ``loss_class``, ``loss_bbox``, ``loss_giou`` for the last layer
    and the same names suffixed ``_{l}`` for auxiliary layer l (0-based), each layer with its
    own Hungarian matching. Classification uses sigmoid focal loss summed over queries and
    classes; every term is normalised by the number of target boxes (averaged over workers).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_class: float = 2.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, aux_loss: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_class": weight_class, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.aux_loss = aux_loss

    @float32_policy  # also called directly (DINO's encoder and denoising losses)
    def layer_losses(self, logits: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float,
                     indices: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
        """Unweighted losses of one decoder layer: logits (B,Q,C), boxes (B,Q,4) cxcywh. ``indices``: fixed
        per-image (query_ids, target_ids) pairs (e.g. denoising queries) instead of Hungarian matching."""
        logits, boxes = logits.float(), boxes.float()  # fp32 losses under AMP (GIoU's eps underflows in fp16)
        if indices is None:
            indices = self.matcher(logits, boxes, targets)
        batch_ids, query_ids, _ = flatten_indices(indices, logits.device)

        onehot = torch.zeros_like(logits)
        labels = torch.cat([t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)])
        onehot[batch_ids, query_ids, labels.to(logits.device)] = 1.0
        loss_class = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma).sum() / num_boxes

        src = boxes[batch_ids, query_ids]
        tgt_boxes = torch.cat([t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, indices)])
        loss_bbox, loss_giou = box_losses(src, tgt_boxes.float(), num_boxes)
        return {"loss_class": loss_class, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @float32_policy  # losses in float32 under AMP (modeling/precision.py)
    def forward(self, outputs: dict[str, Tensor], targets: list[dict]) -> dict[str, Tensor]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        num_boxes = num_boxes_across_workers(targets, logits.device)
        num_layers = logits.shape[0]
        layers = range(num_layers) if self.aux_loss else [num_layers - 1]
        losses = {}
        for layer in layers:
            suffix = "" if layer == num_layers - 1 else f"_{layer}"
            for name, value in self.layer_losses(logits[layer], boxes[layer], targets, num_boxes).items():
                losses[name + suffix] = value * self.weights[name]
        return losses
