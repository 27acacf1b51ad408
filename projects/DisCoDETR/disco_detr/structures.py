"""The batches of pre-training, as the data loader hands them to the training loop.

Every one is a :class:`PretrainBatch`: the training loop moves it to the device (``to``) and gives it to
the configured batch transform; a pre-training method (``modeling/pretrain/base.py``) declares the
subclass it reads.

Both are made by a mapper's ``collate`` (:func:`disco_detr.data.pretrain_mapper.collate_paired_views`,
:func:`disco_detr.data.detreg_mapper.collate_single_views`) and read by the meta-architectures of
``disco_detr.modeling.pretrain``. Images are uint8 RGB in [0, 255], zero-padded to the batch's largest
size at the bottom and right; the model normalises them (``DETRDetector.preprocess_padded``).
Boxes are xyxy in pixels of the (un-padded) image they belong to.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PairedViewBatch", "PretrainBatch", "SingleViewBatch"]


def _move(params: dict[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    return None if params is None else {k: v.to(device, non_blocking=True) for k, v in params.items()}


class PretrainBatch(abc.ABC):
    """What the training loop and the pre-training method base rely on in a batch."""

    #: Whether colour parameters are still to be applied on the device (by ``dataloader.batch_transform``).
    photometric_pending: bool = False

    @property
    def device_work_pending(self) -> bool:
        """Whether anything (colour augmentation, cutting crops) is left to the device's batch transform
        before a model may read the batch."""
        return self.photometric_pending

    @abc.abstractmethod
    def to(self, device: torch.device | str) -> PretrainBatch:
        """The same batch with every tensor on ``device``."""


@dataclass
class PairedViewBatch(PretrainBatch):
    """B samples of DisCo / Siamese DETR pre-training: two views of each image, n boxes that are the
    same physical regions in both views, and a crop of each box.

    The layout is view-major: image ``v * B + b`` is view v (0 or 1) of sample b, in every field with 2B
    rows, so ``images[:B]`` are the first views and ``images[B:]`` the second.

    images: (2B, 3, H, W) uint8 RGB, each view in the top-left ``image_sizes`` corner, zero padding; the
        two views of a sample have the same size.
    image_sizes: 2B (h, w) un-padded view sizes.
    boxes: (2B, n, 4) float32 xyxy view pixels; row k is the same physical box in both views of a
        sample, row 0 the views' intersection.
    crops: (2B, n, 3, s, s) uint8, box k cut from its view (RoIAlign) and colour-augmented; None while
        they are still to be cut on the device (``crop_size`` gives s).
    crop_size: s, the side of the square crops.
    view_photometric / crop_photometric: the colour parameters still to apply on the device
        (:mod:`disco_detr.data.photometric`), one row per view (2B rows, view-major) and per crop
        (2B * n rows, in ``crops.flatten(0, 1)`` order); None once applied, or when the data workers
        applied them already.
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    boxes: Tensor
    crops: Tensor | None
    crop_size: int
    view_photometric: dict[str, Tensor] | None
    crop_photometric: dict[str, Tensor] | None

    @property
    def num_samples(self) -> int:
        """B: the number of source images (half the number of views)."""
        return self.images.shape[0] // 2

    @property
    def photometric_pending(self) -> bool:
        """Whether the colour augmentation (and possibly cutting the crops) is still to be done on the
        device (by :class:`disco_detr.data.photometric.PairedViewPhotometric`)."""
        return self.view_photometric is not None

    @property
    def device_work_pending(self) -> bool:
        return self.photometric_pending or self.crops is None

    def to(self, device: torch.device | str) -> PairedViewBatch:
        """The same batch with every tensor on ``device``."""
        device = torch.device(device)
        return dataclasses.replace(
            self, images=self.images.to(device, non_blocking=True), boxes=self.boxes.to(device, non_blocking=True),
            crops=None if self.crops is None else self.crops.to(device, non_blocking=True),
            view_photometric=_move(self.view_photometric, device), crop_photometric=_move(self.crop_photometric, device))


@dataclass
class SingleViewBatch(PretrainBatch):
    """B samples of DETReg pre-training: one augmented view of each image, its proposals and their crops.

    images: (B, 3, H, W) uint8 RGB, each view in the top-left ``image_sizes`` corner, zero padding.
    image_sizes: B (h, w) un-padded view sizes.
    boxes: (B, K, 4) float32 xyxy view pixels; rows from ``num_boxes[b]`` on are zero (K = the largest
        count of the batch).
    num_boxes: B box counts (python ints).
    crops: (B, K, 3, s, s) uint8, the colour-augmented crop of each box (zero rows after ``num_boxes[b]``).
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    boxes: Tensor
    num_boxes: list[int]
    crops: Tensor

    # DETReg's mapper augments everything in the data workers: nothing is left to the device
    # (PretrainBatch's photometric_pending = False).

    def to(self, device: torch.device | str) -> SingleViewBatch:
        """The same batch with every tensor on ``device``."""
        device = torch.device(device)
        return dataclasses.replace(self, images=self.images.to(device, non_blocking=True),
                                   boxes=self.boxes.to(device, non_blocking=True),
                                   crops=self.crops.to(device, non_blocking=True))
