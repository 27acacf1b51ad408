"""DETReg pre-training (Bar et al., "DETReg: Unsupervised Pretraining with Region Priors for Object
Detection", CVPR 2022) around any detector of the family.

``DETRegPretrain`` is a :class:`~.base.PretrainingModel`: it owns an unchanged detector (the class used
for fine-tuning, built with ``num_classes=1``: every proposal is an "object") and one extra head. It talks to the detector only
through the pre-training contract of :mod:`disco_detr.modeling.detectors.base` (``preprocess_images``,
``encode``, ``initial_queries``, ``decode``, ``backbone``, ``d_model``), so every variant gets it.

Per decoder layer, Hungarian matching of the queries to the view's selective-search boxes (cost:
class 2 focal, L1 5, GIoU 2; the embedding is not in the cost), then the detector's own class head
as objectness (sigmoid focal, alpha 0.25, gamma 2, weight 2) and its own box head (L1 5, GIoU 2),
all normalised by the number of boxes. On the last layer only, the embedding head (2-layer MLP
d -> d -> C) of each matched query regresses the frozen feature of its box's crop with an L1 loss
(weight 1, mean over elements): the crop through the detector's frozen backbone, global-average
pooled at ``embedding_levels`` and concatenated (C3 of SwAV ResNet-50 in the paper: C = 512).

Where the detector's decoder output carries its encoder's prediction on the selected queries
(``DecoderOutput.encoder``: DINO and RT-DETR in training), it is matched and supervised like a
decoder layer (suffix ``_enc``; the release supervises two-stage Deformable DETR's encoder output
the same way).

Input: a :class:`~disco_detr.structures.SingleViewBatch` (images (B, 3, H, W) uint8 padded, image_sizes,
boxes (B, K, 4) xyxy view pixels, num_boxes, crops (B, K, 3, s, s) uint8, colour-augmented by the mapper).
"""
from __future__ import annotations

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor
from torchvision.ops import box_iou

from ...structures import SingleViewBatch
from ..criterion import SetCriterion, flatten_indices, num_boxes_across_workers
from ..detectors.base import DETRDetector
from ..layers import MLP, box_cxcywh_to_xyxy, normalized_cxcywh
from ..matching import HungarianMatcher
from .base import PretrainingModel
from .health import put_health
from .losses import embedding_loss

__all__ = ["DETRegPretrain"]


@META_ARCH_REGISTRY.register()
class DETRegPretrain(PretrainingModel):
    """DETReg pre-training around a DETR detector.

    Args:
        detector: a :class:`~disco_detr.modeling.detectors.base.DETRDetector` with ``num_classes=1``
            and a frozen backbone; its own criterion is not used.
        embedding_levels: backbone outputs whose global average pools, concatenated, are the
            embedding targets (and the embedding head's width).
        weight_class / weight_bbox / weight_giou: loss weights (2 / 5 / 2); weight_embedding: the
            embedding loss's (1; 0 removes the loss and its head).
        cost_class / cost_bbox / cost_giou: matching costs (2 / 5 / 2).
        focal_alpha / focal_gamma: the objectness focal loss (0.25 / 2).
        health_period: every K iterations (and at the first) log ``pretrain_health/*`` (the
            references' spread and displacement, the matched boxes' IoU and the matched embeddings'
            cosine to their targets); 0 turns them off.
    """

    batch_type = SingleViewBatch

    def __init__(self, *, detector: DETRDetector, embedding_levels: tuple[str, ...] = ("res3",),
                 weight_class: float = 2.0, weight_bbox: float = 5.0, weight_giou: float = 2.0,
                 weight_embedding: float = 1.0, cost_class: float = 2.0, cost_bbox: float = 5.0,
                 cost_giou: float = 2.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 health_period: int = 10):
        super().__init__(detector=detector, num_classes=1, levels=embedding_levels, levels_name="embedding_levels",
                         health_period=health_period)
        self.embedding_levels = tuple(embedding_levels)
        self.embedding_dim = sum(self.backbone_shapes[f].channels for f in embedding_levels)
        matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou, class_cost="focal", focal_alpha=focal_alpha,
                                   focal_gamma=focal_gamma)
        self.criterion = SetCriterion(1, matcher, weight_class, weight_bbox, weight_giou, focal_alpha, focal_gamma)
        self.weight_embedding = weight_embedding
        d = detector.d_model
        self.embed_head = MLP(d, d, self.embedding_dim, 2) if weight_embedding > 0 else None

    @property
    def matcher(self) -> HungarianMatcher:
        """The pre-training matcher (for the analysis tools, as DisCoDETR's)."""
        return self.criterion.matcher

    def crop_features(self, crops: Tensor) -> Tensor:
        """(P, 3, s, s) uint8 crops -> (P, C) frozen backbone features pooled at ``embedding_levels``."""
        return self.pooled_backbone_features(crops, self.embedding_levels)

    @staticmethod
    def targets(boxes: Tensor, num_boxes: list[int], image_sizes: list[tuple[int, int]]) -> list[dict]:
        """boxes (B, K, 4) xyxy view pixels, num_boxes [k_b], sizes [(h, w)] -> per image {"labels": (k,)
        zeros, "boxes": (k, 4) cxcywh normalised by the view size}."""
        normalized = normalized_cxcywh(boxes, image_sizes)
        return [{"labels": torch.zeros(k, dtype=torch.long, device=boxes.device), "boxes": normalized[b, :k]}
                for b, k in enumerate(num_boxes)]

    def embedding_loss(self, hidden: Tensor, crops: Tensor, indices) -> tuple[Tensor, Tensor]:
        """DETReg's embedding loss (:func:`.losses.embedding_loss`) of the last layer: the embedding head of
        each matched query (hidden (B, N, d)) against the frozen feature of its box's crop (crops
        (B, K, 3, s, s)). Returns (loss, the matched embeddings' mean cosine to their targets)."""
        batch_ids, query_ids, box_ids = flatten_indices(indices, hidden.device)
        predicted = self.embed_head(hidden[batch_ids, query_ids]).float()
        target = self.crop_features(crops.to(self.device)[batch_ids, box_ids])
        return embedding_loss(predicted, target)

    def losses(self, batch: SingleViewBatch) -> dict[str, Tensor]:
        """The weighted losses on a :class:`SingleViewBatch` on the device."""
        det = self.detector
        encoded = det.encode(det.preprocess_padded(batch.images, batch.image_sizes))
        queries = det.initial_queries(encoded)
        decoded = det.decode(encoded, queries)
        targets = self.targets(batch.boxes.float(), batch.num_boxes, batch.image_sizes)
        num_boxes = num_boxes_across_workers(targets, self.device)

        # every decoder layer: Hungarian matching to the proposals, objectness focal loss, L1 and GIoU
        losses: dict[str, Tensor] = {}
        weights = self.criterion.weights
        # the encoder's prediction on its selected queries (``_enc``, two-stage variants), then every decoder layer
        matches = {}
        for suffix, logits, boxes, _ in decoded.supervised_layers():
            indices = matches[suffix] = self.criterion.matcher(logits, boxes, targets)
            for name, value in self.criterion.layer_losses(logits, boxes, targets, num_boxes, indices).items():
                losses[name + suffix] = weights[name] * value
        losses.update(det.pretraining_losses(decoded, targets, matches))   # the variant's own (D-FINE's FGL, DDF)
        # the last layer's matched queries regress their boxes' crop features
        cosine = None
        if self.embed_head is not None:
            loss, cosine = self.embedding_loss(decoded.hidden[-1], batch.crops, indices)
            losses["loss_embedding"] = self.weight_embedding * loss
        storage = self.health_storage()
        if storage is not None:
            put_health(storage, self.health_metrics(queries.reference, decoded, targets, indices, cosine))
        return losses

    @torch.no_grad()
    def health_metrics(self, bare_reference: Tensor, decoded, targets: list[dict], indices,
                       cosine: Tensor | None) -> dict[str, float]:
        """:func:`~disco_detr.modeling.pretrain.health.reference_health` of the step, plus
        ``matched_iou`` (mean IoU of the last layer's matched boxes with their proposals) and
        ``embedding_cosine`` (mean cosine of the matched embeddings to their crop features)."""
        out = self.reference_health(bare_reference, None)
        batch_ids, query_ids, box_ids = flatten_indices(indices, decoded.boxes.device)
        predicted = box_cxcywh_to_xyxy(decoded.boxes[-1][batch_ids, query_ids].float())
        proposals = box_cxcywh_to_xyxy(torch.cat([t["boxes"][i] for t, (_, i) in zip(targets, indices)]).float())
        out["matched_iou"] = box_iou(predicted, proposals).diagonal().mean().item() if len(predicted) else 0.0
        if cosine is not None:
            out["embedding_cosine"] = cosine.item()
        return out
