"""DETR's set-prediction loss (Carion et al. 2020, eq. 1-2: Hungarian matching, then the matched pairs' losses),
with the sigmoid focal classification of Deformable DETR and DINO, on every supervised layer of a decoder output."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from detectron2.utils import comm
from torch import Tensor, nn

from ..matching import HungarianMatcher
from ..precision import float32_policy
from .denoising import denoising_losses
from .losses import box_losses, sigmoid_focal_loss

if TYPE_CHECKING:  # the detectors build these outputs; the criterion only reads them
    from ..detectors.base import DecoderOutput, DenoisingOutput

__all__ = ["SetCriterion", "flatten_indices", "num_boxes_across_workers"]


def flatten_indices(indices: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image matches [(query_ids, target_ids)] -> flat (batch_ids, query_ids, target_ids) on ``device``."""
    batch_ids = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
    query_ids = torch.cat([q for q, _ in indices]).to(device)
    target_ids = torch.cat([t for _, t in indices]).to(device)
    return batch_ids, query_ids, target_ids


def num_boxes_across_workers(targets: list[dict], device: torch.device) -> float:
    """Average number of target boxes per worker (at least 1), the loss normaliser."""
    num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(num)
    return max(num.item() / comm.get_world_size(), 1.0)


class SetCriterion(nn.Module):
    """DETR losses of one decoder output.

    forward(outputs, targets, denoising=None):
      outputs: a ``DecoderOutput``: logits (L, B, Q, C), boxes (L, B, Q, 4) normalised cxcywh, and the
        encoder's prediction on the selected queries where the detector gives one;
      targets: list of B dicts with "labels" (T_b,) int64 and "boxes" (T_b, 4) normalised cxcywh (by the
        un-padded image size);
      denoising: a ``DenoisingOutput`` (the denoising queries' predictions) or None.
    Returns weighted losses ``loss_class``, ``loss_bbox``, ``loss_giou`` of the last layer, the same names
    suffixed ``_{l}`` for auxiliary decoder layer l (0-based) and ``_enc`` for the encoder prediction
    (``DecoderOutput.supervised_layers``), each with its own Hungarian matching; and with ``denoising``
    the same suffixed ``_dn`` / ``_dn_{l}`` (:func:`.denoising.denoising_losses`). Classification is the
    sigmoid focal loss summed over queries and classes; every term is normalised by the number of target
    boxes (averaged over workers). ``aux_loss`` False keeps the encoder and the last decoder layer only.
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

    @float32_policy  # also called directly (DETReg pre-training, the denoising loss)
    def layer_losses(self, logits: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float,
                     indices: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
        """Unweighted losses of one layer: logits (B,Q,C), boxes (B,Q,4) cxcywh. ``indices``: fixed
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
    def forward(self, outputs: DecoderOutput, targets: list[dict],
                denoising: DenoisingOutput | None = None) -> dict[str, Tensor]:
        num_boxes = num_boxes_across_workers(targets, outputs.logits.device)
        losses = {}
        for suffix, logits, boxes, _ in outputs.supervised_layers(self.aux_loss):
            for name, value in self.layer_losses(logits, boxes, targets, num_boxes).items():
                losses[name + suffix] = value * self.weights[name]
        if denoising is not None:
            losses.update(denoising_losses(self, denoising, targets, num_boxes))
        return losses
