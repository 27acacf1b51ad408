"""The DETR fine-tuning DatasetMapper: flip, multi-scale resize and the random-crop branch."""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import read_rgb_image

__all__ = ["DetrDatasetMapper", "detr_train_augmentations", "detr_test_augmentations"]

logger = logging.getLogger(__name__)


def detr_train_augmentations(min_sizes=tuple(range(480, 801, 32)), max_size=1333,
                             crop_resize_sizes=(400, 500, 600), crop_size=(384, 600), square_sizes=None):
    """DETR's training augmentation as two lists, chosen 50/50 per image by the mapper.

    Returns (plain, with_crop): a horizontal flip then a multi-scale resize (short side from
    ``min_sizes``, long side at most ``max_size``); the crop branch inserts a resize to a
    short side in ``crop_resize_sizes`` and a random crop of side in ``crop_size`` (absolute
    range) before the multi-scale resize. Scale every number down for small images.
    ``square_sizes`` (RT-DETR): the final resize is to an s x s square (aspect not kept), s drawn from it.
    """
    flip = T.RandomFlip(horizontal=True)
    resize = T.ResizeShortestEdge(list(min_sizes), max_size=max_size, sample_style="choice")
    if square_sizes:
        resize = T.RandomResize([(s, s) for s in square_sizes])
    crop = [
        T.ResizeShortestEdge(list(crop_resize_sizes), sample_style="choice"),
        T.RandomCrop("absolute_range", crop_size),
    ]
    return [flip, resize], [flip, *crop, resize]


def detr_test_augmentations(min_size: int = 800, max_size: int = 1333, square_size: int | None = None):
    """Deterministic test-time resize (to ``square_size`` x ``square_size`` when given)."""
    if square_size:
        return [T.Resize((square_size, square_size))]
    return [T.ResizeShortestEdge(min_size, max_size=max_size)]


class DetrDatasetMapper:
    """Maps a detectron2 dataset dict to the model input.

    Training: horizontal flip, then (with probability ``1 - crop_probability``) a
    multi-scale resize with the short side drawn from ``min_sizes`` and the long side at
    most ``max_size``, or (with probability ``crop_probability``) a resize to a short side in
    ``crop_resize_sizes``, a random crop with sides in ``crop_size`` and the same multi-scale
    resize. Test: resize the short side to ``min_sizes[0]`` (long side at most ``max_size``).
    ``square_sizes`` (RT-DETR's 640 x 640 input): the resize goes to an s x s square instead, s drawn from
    ``square_sizes`` in training (multi-scale), ``square_sizes[0]`` at test.
    Scale every number down for small images.

    Output: the dict with "image" (3, H, W) uint8 RGB tensor of the transformed image and,
    in training, "instances" with ``gt_boxes`` (xyxy pixels of the transformed image) and
    ``gt_classes`` (contiguous ids). Boxes emptied by cropping are dropped.

    Bad input raises an error that names the file: unreadable image, a size that differs
    from the dict's "height"/"width", an empty or inverted box, a category id outside
    [0, num_classes). The training loader logs such a sample and skips it.
    """

    def __init__(self, *, is_train: bool, num_classes: int, min_sizes=tuple(range(480, 801, 32)),
                 max_size: int = 1333, crop_resize_sizes=(400, 500, 600), crop_size=(384, 600),
                 crop_probability: float = 0.5, square_sizes: tuple[int, ...] | None = None):
        self.is_train = is_train
        self.num_classes = num_classes
        if is_train:
            plain, with_crop = detr_train_augmentations(min_sizes, max_size, crop_resize_sizes, crop_size, square_sizes)
            self.augmentation = T.AugmentationList(plain)
            self.augmentation_with_crop = T.AugmentationList(with_crop)
        else:
            square = square_sizes[0] if square_sizes else None
            self.augmentation = T.AugmentationList(detr_test_augmentations(min_sizes[0], max_size, square))
            self.augmentation_with_crop = None
        self.crop_probability = crop_probability
    def check_annotations(self, dataset_dict: dict) -> None:
        file_name = dataset_dict["file_name"]
        for obj in dataset_dict.get("annotations", []):
            if obj.get("iscrowd", 0):  # crowd regions are not trained on (dropped in __call__)
                continue
            box = np.asarray(obj["bbox"], dtype=np.float64)
            xyxy = utils.BoxMode.convert(box.tolist(), obj["bbox_mode"], utils.BoxMode.XYXY_ABS)
            if not np.all(np.isfinite(xyxy)) or xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
                raise ValueError(f"{file_name}: empty or inverted box {obj['bbox']} ({obj['bbox_mode']})")
            cat = obj["category_id"]
            if not 0 <= cat < self.num_classes:
                raise ValueError(
                    f"{file_name}: category id {cat} is outside [0, {self.num_classes}); "
                    "the dataset and the model's num_classes disagree"
                )

    def read(self, dataset_dict: dict) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image of ``dataset_dict`` (checked against its size) after checking its
        annotations in training; errors name the file."""
        file_name = dataset_dict["file_name"]
        image = read_rgb_image(file_name)
        try:
            utils.check_image_size(dataset_dict, image)
        except Exception as e:
            raise ValueError(f"{file_name}: {e}") from e
        if self.is_train:
            self.check_annotations(dataset_dict)
        return image

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.read(dataset_dict)
        augs = self.augmentation
        if self.augmentation_with_crop is not None and np.random.rand() < self.crop_probability:
            augs = self.augmentation_with_crop
        return self.apply(dataset_dict, image, augs)

    def apply(self, dataset_dict: dict, image: np.ndarray, augs: T.AugmentationList) -> dict:
        """Run ``augs`` on ``image`` (H, W, 3) uint8 and the dict's annotations (crowd regions dropped); fill
        "image" and, in training, "instances" (xyxy pixels of the result, empty boxes dropped)."""
        aug_input = T.AugInput(image)
        transforms = augs(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        annotations = dataset_dict.pop("annotations", None)
        if not self.is_train or annotations is None:
            return dataset_dict
        image_shape = image.shape[:2]
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_shape)
            for obj in annotations
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
