"""D-FINE's set loss (Peng et al. 2025): RT-DETR's (varifocal 1, L1 5, GIoU 2, through
:meth:`RTDETRCriterion.layer_losses`, so any classification option of the parent applies) on the encoder's top-N
(``*_enc``), the initial boxes (``*_pre``), every decoder layer and the denoising queries, plus on every decoder
layer (and denoising layer):

* FGL, fine-grained localisation (eq. 6), weight 0.15: per matched query and edge, the target edge distance
  (:func:`~..layers.distribution.box_to_distance` of the target from the detached initial box) falls between two
  bins of W; cross-entropy of the edge's bin logits with the left and right bins, weighted by the target's
  distance to the other bin, times the IoU of the layer's box with its target (detached); summed, divided by the
  number of target boxes.
* DDF, decoupled distillation focal (GO-LSD, eq. 7), weight 1.5: ``T^2 KL(softmax(teacher / T) ||
  softmax(student / T))`` per query and edge (T = 5), teacher = the last layer's bin logits (detached), student
  = layer l's; weighted by the IoU with the target for matched queries and by the teacher's best sigmoid score
  otherwise (both detached); the mean over matched and over unmatched (query, edge) pairs, combined with weights
  sqrt(count / B). The last layer's DDF is 0 (student = teacher). DDF uses the targets only through the
  matching and the matched IoUs, which is why pre-training can run it on pseudo boxes (docs/pretraining.md).

Coordinates: boxes are normalised cxcywh; bin logits (B, N, 4 * (bins + 1)), edges (left, top, right, bottom).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..layers import box_cxcywh_to_xyxy, box_iou
from ..layers.distribution import box_to_distance, distribution_targets, weighting_function
from ..matching import HungarianMatcher
from ..precision import float32_policy
from .rt_detr import RTDETRCriterion
from .set_criterion import flatten_indices, num_boxes_across_workers

__all__ = ["DFineCriterion", "distribution_losses"]


@float32_policy
def distribution_losses(corners: Tensor, initial: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float,
                        indices: list[tuple[Tensor, Tensor]], teacher_corners: Tensor, teacher_logits: Tensor,
                        bin_values: Tensor, reg_scale: float, temperature: float = 5.0) -> dict[str, Tensor]:
    """Unweighted ``loss_fgl`` and ``loss_ddf`` (module docstring) of one layer: corners (B, N, 4 * (bins + 1)) its
    bin logits, initial (B, N, 4) the initial boxes, boxes (B, N, 4) its boxes, ``targets`` (dicts with "boxes"
    (T_b, 4) cxcywh), ``indices`` its matching, teacher_corners (B, N, 4 * (bins + 1)) and teacher_logits
    (B, N, C) the last layer's; ``bin_values`` (bins + 1,) W, ``reg_scale`` and ``temperature`` (T) as D-FINE's."""
    corners, initial, boxes = corners.float(), initial.float(), boxes.float()
    bins = bin_values.numel()
    batch_ids, query_ids, _ = flatten_indices(indices, corners.device)
    tgt = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)]).float()
    tgt = box_cxcywh_to_xyxy(tgt)
    iou = torch.diag(box_iou(box_cxcywh_to_xyxy(boxes[batch_ids, query_ids]), tgt)).detach() if len(tgt) \
        else boxes.new_zeros(0)
    # FGL
    with torch.no_grad():
        distance = box_to_distance(initial[batch_ids, query_ids].detach(), tgt, reg_scale).reshape(-1)
        left, weight_right = distribution_targets(distance, bin_values.to(distance.dtype))
    pred = corners[batch_ids, query_ids].reshape(-1, bins)
    fgl = (F.cross_entropy(pred, left, reduction="none") * (1 - weight_right)
           + F.cross_entropy(pred, left + 1, reduction="none") * weight_right)
    loss_fgl = (fgl * iou.repeat_interleave(4)).sum() / num_boxes
    # DDF
    student = corners.reshape(-1, bins)
    teacher = teacher_corners.float().reshape(-1, bins).detach()
    if torch.equal(student, teacher):
        return {"loss_fgl": loss_fgl, "loss_ddf": student.sum() * 0.0}
    weight = teacher_logits.detach().float().sigmoid().max(-1).values                     # (B, N)
    weight[batch_ids, query_ids] = iou
    matched = torch.zeros_like(weight, dtype=torch.bool)
    matched[batch_ids, query_ids] = True
    weight, matched = weight.repeat_interleave(4, dim=1).reshape(-1), matched.repeat_interleave(4, 1).reshape(-1)
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="none").sum(-1)
    kl = weight * t ** 2 * kl
    scale = 1.0 / corners.shape[0]
    num_pos, num_neg = (matched.sum() * scale) ** 0.5, ((~matched).sum() * scale) ** 0.5
    pos = kl[matched].mean() if matched.any() else kl.sum() * 0.0
    neg = kl[~matched].mean() if (~matched).any() else kl.sum() * 0.0
    return {"loss_fgl": loss_fgl, "loss_ddf": (pos * num_pos + neg * num_neg) / (num_pos + num_neg)}


class DFineCriterion(RTDETRCriterion):
    """:class:`RTDETRCriterion`'s terms plus ``loss_fgl`` and ``loss_ddf`` on the decoder layers (see the module
    docstring); names as :class:`~.set_criterion.SetCriterion`'s, and ``*_pre`` for the initial boxes.

    Args (besides the parent's): weight_fgl (0.15), weight_ddf (1.5), ddf_temperature (5), and the
    distribution's ``max_num_bins``, ``reg_scale``, ``up`` (the detector's; :func:`weighting_function`).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_vfl: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, weight_fgl: float = 0.15,
                 weight_ddf: float = 1.5, ddf_temperature: float = 5.0, max_num_bins: int = 32,
                 reg_scale: float = 4.0, up: float = 0.5, aux_loss: bool = True, **kwargs):
        super().__init__(num_classes, matcher, weight_vfl=weight_vfl, weight_bbox=weight_bbox,
                         weight_giou=weight_giou, aux_loss=aux_loss, **kwargs)
        self.pre_weights = dict(self.weights)
        self.weights = {**self.weights, "loss_fgl": weight_fgl, "loss_ddf": weight_ddf}
        self.temperature = ddf_temperature
        self.max_num_bins, self.reg_scale = max_num_bins, reg_scale
        self.register_buffer("bin_values", weighting_function(max_num_bins, up, reg_scale), persistent=False)

    def local_losses(self, corners: Tensor, initial: Tensor, boxes: Tensor, targets: list[dict], num_boxes: float,
                     indices: list[tuple[Tensor, Tensor]], teacher_corners: Tensor,
                     teacher_logits: Tensor) -> dict[str, Tensor]:
        """Unweighted ``loss_fgl`` and ``loss_ddf`` of one layer (:func:`distribution_losses` with this
        criterion's bins and temperature)."""
        return distribution_losses(corners, initial, boxes, targets, num_boxes, indices, teacher_corners,
                                   teacher_logits, self.bin_values, self.reg_scale, self.temperature)

    def _layers(self, logits: Tensor, boxes: Tensor, corners: Tensor, initial: Tensor, pre: tuple[Tensor, Tensor],
                targets: list[dict], num_boxes: float, tag: str, indices=None) -> dict[str, Tensor]:
        """Weighted losses of a stack of decoder layers (``indices`` fixed for denoising, else matched per
        layer) and of its initial boxes (``{tag}_pre``)."""
        losses = {}
        num_layers = logits.shape[0]
        for layer in range(num_layers) if self.aux_loss else [num_layers - 1]:
            suffix = tag if layer == num_layers - 1 else f"{tag}_{layer}"   # as detectors.base.layer_suffixes
            match = indices if indices is not None else self.matcher(logits[layer], boxes[layer], targets)
            values = self.layer_losses(logits[layer], boxes[layer], targets, num_boxes, match)
            values.update(self.local_losses(corners[layer], initial, boxes[layer], targets, num_boxes, match,
                                            corners[-1], logits[-1]))
            losses.update({name + suffix: value * self.weights[name] for name, value in values.items()})
        match = indices if indices is not None else self.matcher(pre[0], pre[1], targets)
        values = self.layer_losses(pre[0], pre[1], targets, num_boxes, match)
        losses.update({f"{name}{tag}_pre": value * self.pre_weights[name] for name, value in values.items()})
        return losses

    @float32_policy
    def forward(self, outputs, targets: list[dict], denoising=None) -> dict[str, Tensor]:
        """``outputs``: a :class:`~..detectors.d_fine.DFineDecoderOutput`; ``denoising``: a
        :class:`~..detectors.d_fine.DFineDenoisingOutput` or None; targets as :class:`SetCriterion`'s."""
        num_boxes = num_boxes_across_workers(targets, outputs.logits.device)
        losses = {}
        if outputs.encoder is not None:
            values = self.layer_losses(outputs.encoder.logits, outputs.encoder.boxes, targets, num_boxes)
            losses.update({f"{name}_enc": value * self.pre_weights[name] for name, value in values.items()})
        losses.update(self._layers(outputs.logits, outputs.boxes, outputs.corners, outputs.initial,
                                   (outputs.pre_logits, outputs.pre_boxes), targets, num_boxes, ""))
        if denoising is not None:
            groups = denoising.groups
            losses.update(self._layers(denoising.logits, denoising.boxes, denoising.corners, denoising.initial,
                                       (denoising.pre_logits, denoising.pre_boxes), targets,
                                       num_boxes * groups.num_groups, "_dn", groups.matches()))
        return losses

