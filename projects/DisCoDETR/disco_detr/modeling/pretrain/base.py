"""The base of every pre-training method (DisCo / Siamese DETR, DETReg, and any new one).

A method is a :class:`PretrainingModel`: it wraps an unchanged detector (the class that fine-tuning
uses, a :class:`~disco_detr.modeling.detectors.base.DETRDetector` with a frozen backbone), adds its own
heads, declares the batch type it reads (:attr:`PretrainingModel.batch_type`, a
:class:`~disco_detr.structures.PretrainBatch`) and writes ``losses(batch) -> {name: scalar}``.

The base owns what every method does the same way:

* the wrapped detector, under the attribute :data:`DETECTOR_ATTRIBUTE`: its state-dict keys are
  ``detector.*``, which is the transfer rule (:data:`DETECTOR_PREFIX`; ``checkpoint/checkpointer.py``
  keeps those keys, without the prefix, for fine-tuning and drops every other one);
* the detector checks (class count, frozen backbone, feature levels that are backbone outputs);
* the health period and the ``health_start_reference`` buffer (N, 2) of the bare reference centres at
  the run's first step (normalised cxcy; NaN until then; in checkpoints, so a resumed run measures from
  the same start);
* the device, the training-only guard, the batch type check and the move of the batch to the device.

Steps for a new method: docs/pretraining.md, "Adding a method".
"""
from __future__ import annotations

import abc
from typing import ClassVar

import torch
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from ...structures import PretrainBatch
from ..detectors.base import DETRDetector
from .health import due_storage, reference_health

__all__ = ["DETECTOR_ATTRIBUTE", "DETECTOR_PREFIX", "PretrainingModel"]

#: The attribute of a pre-training model that holds the wrapped detector.
DETECTOR_ATTRIBUTE = "detector"
#: The state-dict prefix of the wrapped detector's weights: what transfers to fine-tuning.
DETECTOR_PREFIX = DETECTOR_ATTRIBUTE + "."


class PretrainingModel(nn.Module, metaclass=abc.ABCMeta):
    """A pre-training method around a DETR detector (see the module docstring).

    Subclasses set :attr:`batch_type` and implement :meth:`losses`; their ``__init__`` calls this one
    first and then builds their heads.

    Args:
        detector: the :class:`DETRDetector` to pre-train, built with ``num_classes`` classes and a
            frozen backbone; its own criterion is not used.
        num_classes: the class count the method needs of the detector (e.g. 2: object / no-object).
        levels: backbone outputs the method pools features from; ``levels_name`` names them in errors.
        health_period: every K iterations (and at the first) the method logs its health metrics
            (:meth:`health_storage`); 0 turns them off.
    """

    #: The batch class :meth:`forward` accepts (the collate function of the method's data loader makes it).
    batch_type: ClassVar[type[PretrainBatch]] = PretrainBatch

    def __init__(self, *, detector: DETRDetector, num_classes: int, levels, levels_name: str, health_period: int):
        super().__init__()
        name = type(self).__name__
        if not isinstance(detector, DETRDetector):
            raise TypeError(f"{name} needs a DETRDetector, got {type(detector).__name__}")
        if detector.num_classes != num_classes:
            what = "object, no-object" if num_classes == 2 else "every proposal is an object"
            raise ValueError(f"{name}'s detector must have num_classes={num_classes} ({what}), got {detector.num_classes}")
        trainable = [n for n, p in detector.backbone.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"The backbone must be frozen in {name} pre-training; trainable: {trainable[:3]} ...")
        shapes = detector.backbone.output_shape()
        missing = [f for f in levels if f not in shapes]
        if missing:
            raise ValueError(f"{levels_name} {missing} are not backbone outputs ({sorted(shapes)})")
        if health_period < 0:
            raise ValueError(f"health_period must be >= 0, got {health_period}")
        setattr(self, DETECTOR_ATTRIBUTE, detector)
        #: the backbone's output shapes, for the heads' widths and RoIAlign's strides
        self.backbone_shapes: dict[str, ShapeSpec] = shapes
        self.health_period = health_period
        self.register_buffer("health_start_reference", torch.full((detector.num_queries, 2), float("nan")))

    @property
    def device(self) -> torch.device:
        return self.detector.device

    def forward(self, batch: PretrainBatch) -> dict[str, Tensor]:
        """Refuse evaluation mode, a batch of another type, or one with device work still pending (the
        training loop's ``dataloader.batch_transform`` does it before the forward); then
        ``losses(batch on the detector's device)``."""
        name = type(self).__name__
        if not self.training:
            raise RuntimeError(f"{name} is a pre-training model; evaluate the fine-tuned detector instead.")
        if not isinstance(batch, self.batch_type):
            raise TypeError(f"{name} takes a {self.batch_type.__name__}, got {type(batch).__name__}: check the "
                            "config's dataloader.train (its mapper and collate)")
        if batch.device_work_pending:
            raise ValueError(f"{name} got a batch whose colour augmentation or crops are still to be done on the "
                             "device: the training loop applies dataloader.batch_transform (e.g. PairedViewPhotometric) "
                             "before the forward; apply it first when calling the model directly")
        return self.losses(batch.to(self.device))

    @abc.abstractmethod
    def losses(self, batch: PretrainBatch) -> dict[str, Tensor]:
        """The method's weighted losses on ``batch`` (a :attr:`batch_type`, already on :attr:`device`):
        {name: scalar tensor}; the training loop sums them."""

    # ---- shared helpers -----------------------------------------------------------------------
    @torch.no_grad()
    def pooled_backbone_features(self, images: Tensor, levels) -> Tensor:
        """(P, 3, s, s) uint8 RGB images (crops) -> (P, C) float32: the detector's pixel normalisation, its
        frozen backbone, each of ``levels`` averaged over space (in float32), concatenated in order."""
        det = self.detector
        x = (images.to(det.device).float() - det.pixel_mean) / det.pixel_std
        features = det.backbone(x)
        return torch.cat([features[f].float().mean((2, 3)) for f in levels], 1)

    def health_storage(self):
        """detectron2's event storage when the health metrics are due at this iteration (the first, then
        every ``health_period``); None otherwise (and outside a trainer)."""
        return due_storage(self.health_period)

    def reference_health(self, bare_reference: Tensor, used_references: Tensor | None) -> dict[str, float]:
        """:func:`~disco_detr.modeling.pretrain.health.reference_health` of the step, measuring displacement
        from :attr:`health_start_reference` for learned queries (the same references for every image)."""
        start = None if self.detector.references_depend_on_image else self.health_start_reference
        return reference_health(bare_reference, used_references, start)
