"""RT-DETR's set loss (Zhao et al. 2024, eq. 2: IoU-aware classification): the varifocal loss, whose target
for a matched query is the IoU of its box with its target, replaces the focal loss of :class:`SetCriterion`;
``class_loss="mal"`` takes DEIM's matchability-aware loss instead (:mod:`.mal`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..layers import box_cxcywh_to_xyxy, box_iou
from ..matching import HungarianMatcher
from ..precision import float32_policy
from .losses import box_losses, varifocal_loss
from .mal import MAL_ALPHA, MAL_GAMMA, matchability_aware_loss
from .set_criterion import SetCriterion, flatten_indices

__all__ = ["RTDETRCriterion"]


class RTDETRCriterion(SetCriterion):
    """``loss_vfl`` (varifocal, alpha 0.75, gamma 2) + ``loss_bbox`` (L1) + ``loss_giou``, each summed and divided
    by the number of target boxes, on the encoder prediction (``_enc``), every decoder layer and the denoising
    queries, named as :class:`SetCriterion` names them.

    ``class_loss``: ``"vfl"`` (``alpha``, ``gamma``) or ``"mal"``: DEIM's ``loss_mal`` (``mal_gamma`` 1.5,
    ``mal_alpha`` None: the release's defaults) with the same weight ``weight_vfl`` in place of ``loss_vfl``."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_vfl: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, alpha: float = 0.75, gamma: float = 2.0,
                 aux_loss: bool = True, class_loss: str = "vfl", mal_gamma: float = MAL_GAMMA,
                 mal_alpha: float | None = MAL_ALPHA):
        super().__init__(num_classes, matcher, weight_class=weight_vfl, weight_bbox=weight_bbox,
                         weight_giou=weight_giou, focal_alpha=alpha, focal_gamma=gamma, aux_loss=aux_loss)
        if class_loss not in ("vfl", "mal"):
            raise ValueError(f"class_loss must be 'vfl' or 'mal', got {class_loss!r}")
        self.class_loss, self.mal_gamma, self.mal_alpha = class_loss, mal_gamma, mal_alpha
        self.weights = {f"loss_{class_loss}": weight_vfl, "loss_bbox": weight_bbox, "loss_giou": weight_giou}

    @float32_policy
    def layer_losses(self, logits: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float,
                     indices: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
        """Unweighted losses of one layer: logits (B,Q,C), boxes (B,Q,4) cxcywh; ``indices`` as in
        :meth:`SetCriterion.layer_losses`."""
        logits, boxes = logits.float(), boxes.float()
        if indices is None:
            indices = self.matcher(logits, boxes, targets)
        batch_ids, query_ids, _ = flatten_indices(indices, logits.device)
        labels = torch.cat([t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)])
        tgt_boxes = torch.cat([t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, indices)]).float()
        src = boxes[batch_ids, query_ids]
        iou = torch.zeros(logits.shape[:2], device=logits.device)
        if len(src):
            matched_iou = torch.diag(box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt_boxes))).detach()
            iou[batch_ids, query_ids] = matched_iou
        onehot = torch.zeros_like(logits)
        onehot[batch_ids, query_ids, labels.to(logits.device)] = 1.0
        if self.class_loss == "mal":
            loss_class = matchability_aware_loss(logits, onehot, iou, self.mal_gamma, self.mal_alpha)
        else:
            loss_class = varifocal_loss(logits, onehot, iou, self.focal_alpha, self.focal_gamma)
        loss_bbox, loss_giou = box_losses(src, tgt_boxes, num_boxes)
        return {f"loss_{self.class_loss}": loss_class.sum() / num_boxes, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
