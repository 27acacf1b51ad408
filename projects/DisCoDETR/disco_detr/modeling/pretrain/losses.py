"""The losses of pre-training (DisCo / Siamese DETR, DETReg), as functions of tensors.

All run under :func:`~disco_detr.modeling.precision.float32_policy` (autocast off, inputs cast up to at
least float32). Boxes are normalised cxcywh.

* :func:`localisation_losses`: DisCo DETR's L_loc (UP-DETR's random-query-patch detection, with
  proposals as the boxes): object / no-object cross-entropy over every query, L1 and GIoU on the matched
  ones, per decoder layer.
* :func:`reconstruction_loss`: L_rec, the matched query's output against the frozen feature of the
  other view's crop (UP-DETR's feature reconstruction: 2 - 2 cos per box).
* :func:`two_minus_two_cos`: L_enc's symmetric term (BYOL / SimSiam form) on pooled encoder memory.
* :func:`negative_cosine` / :func:`simsiam_loss`: CLD's SimSiam loss on matched decoder outputs.
* :func:`embedding_loss`: DETReg's embedding term, L1 between the matched queries' embeddings and
  their boxes' frozen crop features.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..criterion import box_losses, flatten_indices
from ..precision import at_least_float32, float32_policy

__all__ = ["embedding_loss", "localisation_losses", "negative_cosine", "reconstruction_loss", "simsiam_loss",
           "two_minus_two_cos"]


@float32_policy
def localisation_losses(logits: Tensor, boxes: Tensor, targets: Tensor, indices,
                        no_object_weight: float) -> dict[str, Tensor]:
    """L_loc of one decoder layer: object / no-object cross-entropy over all queries (no-object weighted
    ``no_object_weight``) + L1 and GIoU on the matched ones, normalised by the M * n boxes.

    logits (M, N, 2) (class 0 = object), boxes (M, N, 4) predicted cxcywh, targets (M, n, 4) cxcywh,
    indices: per image ``(query_ids, box_ids)``. Returns {"class", "bbox", "giou"} scalars, unweighted.
    """
    m, n = targets.shape[:2]
    batch_ids, query_ids, target_ids = flatten_indices(indices, logits.device)
    labels = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)  # 1 = no object
    labels[batch_ids, query_ids] = 0
    class_weight = torch.tensor([1.0, no_object_weight], device=logits.device)
    loss_class = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), weight=class_weight)
    src = boxes[batch_ids, query_ids].float()
    tgt = targets[batch_ids, target_ids].float()
    loss_bbox, loss_giou = box_losses(src, tgt, float(m * n))
    return {"class": loss_class, "bbox": loss_bbox, "giou": loss_giou}


@float32_policy
def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """L_rec for (..., C) predictions and targets: per box the squared distance between the
    L2-normalised vectors, **summed over the C channels** (= 2 - 2 cos), averaged over
    boxes (UP-DETR and both released codes; a mean over channels would divide it by C)."""
    p = F.normalize(prediction.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    return (p - t).pow(2).sum(-1).mean()


@float32_policy
def two_minus_two_cos(prediction: Tensor, target: Tensor) -> Tensor:
    """2 - 2 cos(p, sg(z)), averaged over rows: (P, d), (P, d) -> scalar; the target gets no gradient."""
    return (2 - 2 * F.cosine_similarity(at_least_float32(prediction), at_least_float32(target.detach()),
                                        dim=-1)).mean()


@float32_policy
def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """D(p, z) = -cos(p, sg(z)), averaged over rows: (P, d), (P, d) -> scalar, at least in float32. The target gets
    no gradient."""
    return -F.cosine_similarity(at_least_float32(prediction), at_least_float32(target.detach()), dim=-1).mean()


def simsiam_loss(t1: Tensor, t1_hat: Tensor, t2: Tensor, t2_hat: Tensor) -> Tensor:
    """CLD's loss: L = 1/2 D(t2_hat, sg(t1)) + 1/2 D(t1_hat, sg(t2)) (:func:`negative_cosine`), with t_v the
    projected and t_v_hat the predicted decoder outputs of view v, (P, d) each."""
    return 0.5 * negative_cosine(t2_hat, t1) + 0.5 * negative_cosine(t1_hat, t2)


def embedding_loss(predicted: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """DETReg's embedding loss: L1 (mean over elements) between the (P, C) embeddings of the matched
    queries and the (P, C) frozen features of their boxes' crops. Returns (loss, the mean cosine of the
    predictions to their targets, without gradient, for the health log)."""
    cosine = F.cosine_similarity(predicted.detach(), target, dim=-1).mean()
    return F.l1_loss(predicted, target), cosine
