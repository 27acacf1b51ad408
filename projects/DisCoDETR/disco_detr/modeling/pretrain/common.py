"""What every pre-training meta-architecture (DisCo / Siamese DETR, DETReg) checks and computes the same
way around its detector."""
from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from torch import Tensor

from ..detectors.base import DETRDetector

__all__ = ["check_pretraining_detector", "pooled_backbone_features"]


def check_pretraining_detector(detector, num_classes: int, levels, levels_name: str, owner: str) -> dict[str, ShapeSpec]:
    """Refuse a detector that is not a :class:`DETRDetector`, has another class count than the method
    needs, or trains its backbone, and ``levels`` (named ``levels_name`` in the errors) that are not
    backbone outputs. Returns the backbone's output shapes."""
    if not isinstance(detector, DETRDetector):
        raise TypeError(f"{owner} needs a DETRDetector, got {type(detector).__name__}")
    if detector.num_classes != num_classes:
        what = "object, no-object" if num_classes == 2 else "every proposal is an object"
        raise ValueError(f"{owner}'s detector must have num_classes={num_classes} ({what}), got {detector.num_classes}")
    trainable = [n for n, p in detector.backbone.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"The backbone must be frozen in {owner} pre-training; trainable: {trainable[:3]} ...")
    shapes = detector.backbone.output_shape()
    missing = [f for f in levels if f not in shapes]
    if missing:
        raise ValueError(f"{levels_name} {missing} are not backbone outputs ({sorted(shapes)})")
    return shapes


@torch.no_grad()
def pooled_backbone_features(detector: DETRDetector, images: Tensor, levels) -> Tensor:
    """(P, 3, s, s) uint8 RGB images (crops) -> (P, C) float32: the detector's pixel normalisation, its
    frozen backbone, each of ``levels`` averaged over space (in float32), concatenated in order."""
    x = (images.to(detector.device).float() - detector.pixel_mean) / detector.pixel_std
    features = detector.backbone(x)
    return torch.cat([features[f].float().mean((2, 3)) for f in levels], 1)
