"""DEIM's dense one-to-one matching (Huang et al., CVPR 2025, section 3.2): mosaic images carry more objects, so that
one-to-one matching gives more positive queries per image, at no cost to the model.

:class:`MosaicDetrDatasetMapper` is :class:`~.detr_mapper.DetrDatasetMapper` that, in training, inside an epoch
window and with a probability per image, replaces the image by a mosaic before the usual flip and resize:

1. the image and three records drawn uniformly (with replacement) from the dataset are each resized so that their
   short side is ``mosaic_size`` (aspect kept);
2. they are pasted at the four corners of a 2 x 2 grid of cells of the largest resized height and width (image,
   then the draws: top-left, top-right, bottom-left, bottom-right; the rest of the canvas is black), boxes shifted
   by the cell offsets;
3. one random affine map of the whole canvas (output of the same size): rotation uniform in +-``rotation`` degrees
   and scale uniform in ``scaling`` about the canvas centre, then a translation uniform in +-``translation`` of the
   canvas width / height (rounded to pixels); each box becomes the axis-aligned box of its four mapped corners,
   clipped to the canvas; boxes narrower or lower than ``min_box_size`` pixels are dropped;
4. the mapper's plain augmentation (flip, multi-scale resize), never the crop branch (DEIM skips its ZoomOut /
   IoUCrop on mosaic images).

Boxes stay xyxy pixels throughout (detectron2 ``XYXY_ABS`` annotations; ``Instances.gt_boxes`` of the output).
The window and the draws need the stream: :class:`~.build.StreamDataset` calls :meth:`map_in_stream`; called plainly
(no dataset, no epoch) the mapper is the base mapper. Outside the window, or when the per-image draw says no, the
output (and the RNG use) equals the base mapper's. Not reproduced from the release: its MixUp of batch pairs, and
torchvision's bilinear warp (ours is OpenCV's; docs/deim.md).
"""
from __future__ import annotations

import copy
import math

import cv2
import numpy as np
from detectron2.structures import BoxMode

from .detr_mapper import DetrDatasetMapper

__all__ = ["MosaicDetrDatasetMapper", "affine_boxes", "mosaic_affine_matrix", "paste_mosaic", "warp_image"]


def _xyxy_annotations(dataset_dict: dict) -> list[dict]:
    """Non-crowd annotations with ``bbox`` as float64 xyxy pixels (masks and keypoints left out: not mapped)."""
    annos = []
    for obj in dataset_dict.get("annotations", []):
        if obj.get("iscrowd", 0):
            continue
        box = BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS)
        kept = {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}
        annos.append({**kept, "bbox": np.asarray(box, dtype=np.float64), "bbox_mode": BoxMode.XYXY_ABS})
    return annos


def _resize_short_side(image: np.ndarray, annos: list[dict], size: int) -> tuple[np.ndarray, list[dict]]:
    """Resize (H, W, 3) so that min(H, W) = ``size`` (bilinear; sides rounded), boxes scaled per axis."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    factor = np.array([new_w / w, new_h / h, new_w / w, new_h / h])
    return image, [{**a, "bbox": a["bbox"] * factor} for a in annos]


def paste_mosaic(parts: list[tuple[np.ndarray, list[dict]]]) -> tuple[np.ndarray, list[dict]]:
    """Four (image (H_i, W_i, 3) uint8, xyxy-pixel annotations) at the corners of a black (2 max H, 2 max W) canvas:
    top-left, top-right, bottom-left, bottom-right; boxes shifted by their cell's offset."""
    if len(parts) != 4:
        raise ValueError(f"a mosaic takes 4 images, got {len(parts)}")
    cell_h = max(img.shape[0] for img, _ in parts)
    cell_w = max(img.shape[1] for img, _ in parts)
    canvas = np.zeros((2 * cell_h, 2 * cell_w, 3), dtype=np.uint8)
    annos = []
    for i, (img, part_annos) in enumerate(parts):
        dy, dx = (i // 2) * cell_h, (i % 2) * cell_w
        canvas[dy:dy + img.shape[0], dx:dx + img.shape[1]] = img
        annos += [{**a, "bbox": a["bbox"] + np.array([dx, dy, dx, dy])} for a in part_annos]
    return canvas, annos


def mosaic_affine_matrix(height: int, width: int, angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """(2, 3) map x' = A x + b of continuous pixel coordinates (box coordinates: the image spans [0, width] x
    [0, height]): rotate by ``angle`` degrees (counter-clockwise on screen, y down) and scale by ``scale`` about the
    centre (width / 2, height / 2), then translate by (tx, ty)."""
    theta = math.radians(angle)
    cos, sin = math.cos(theta) * scale, math.sin(theta) * scale
    cx, cy = width / 2, height / 2
    # y points down, so a counter-clockwise turn on screen is x' = cos x + sin y, y' = -sin x + cos y
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([cx + tx, cy + ty]) - linear @ np.array([cx, cy])
    return np.concatenate([linear, offset[:, None]], axis=1)


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 under the continuous-coordinate ``matrix`` (2, 3) (bilinear, black outside), same size.
    OpenCV indexes pixel centres by integers (continuous = integer + 0.5), so its matrix is ``[A | b + A 0.5 - 0.5]``."""
    linear, offset = matrix[:, :2], matrix[:, 2]
    pixel = np.concatenate([linear, (offset + linear @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
    h, w = image.shape[:2]
    return cv2.warpAffine(image, pixel, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def affine_boxes(boxes: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 4) xyxy pixel boxes -> the axis-aligned boxes of their four corners under ``matrix`` (2, 3), clipped to
    [0, width] x [0, height]."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1),
                        np.stack([x1, y1], -1)], 1)  # (N, 4, 2)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    out = np.concatenate([mapped.min(1), mapped.max(1)], axis=1)
    return np.clip(out, 0, [width, height, width, height])


class MosaicDetrDatasetMapper(DetrDatasetMapper):
    """:class:`DetrDatasetMapper` with DEIM's mosaic (module docstring). Defaults are the release's
    (``configs/base/deim.yml``): probability 0.5 per image, short side 320, rotation +-10 degrees, translation +-10 %,
    scale 0.5-1.5, epochs ``[4, 29)`` of its 58-epoch D-FINE schedule (its rule: ``4 + epochs // 2``).

    Extra args: ``mosaic_probability``; ``mosaic_epochs`` (first, end) epochs of the dataset; ``mosaic_size``;
    ``rotation`` (degrees); ``translation`` (fractions of width, height); ``scaling`` (min, max);
    ``min_box_size`` (pixels, on the mosaic canvas). Output as :class:`DetrDatasetMapper`.
    """

    def __init__(self, *, mosaic_probability: float = 0.5, mosaic_epochs: tuple[int, int] = (4, 29),
                 mosaic_size: int = 320, rotation: float = 10.0, translation: tuple[float, float] = (0.1, 0.1),
                 scaling: tuple[float, float] = (0.5, 1.5), min_box_size: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= mosaic_probability <= 1.0:
            raise ValueError(f"mosaic_probability must be in [0, 1], got {mosaic_probability}")
        self.mosaic_probability = mosaic_probability
        self.mosaic_epochs = tuple(mosaic_epochs)
        self.mosaic_size = mosaic_size
        self.rotation, self.translation, self.scaling = rotation, tuple(translation), tuple(scaling)
        self.min_box_size = min_box_size

    def map_in_stream(self, dataset_dict: dict, dataset, epoch: int) -> dict:
        """Map ``dataset_dict`` at ``epoch``; a mosaic draws its other three records from ``dataset`` (indexable)."""
        first, end = self.mosaic_epochs
        if not (self.is_train and first <= epoch < end and np.random.rand() < self.mosaic_probability):
            return self(dataset_dict)
        others = [dataset[int(i)] for i in np.random.randint(len(dataset), size=3)]
        dataset_dict = copy.deepcopy(dataset_dict)
        image, annotations = self.mosaic([dataset_dict, *others])
        dataset_dict["annotations"] = annotations
        dataset_dict["height"], dataset_dict["width"] = image.shape[:2]
        return self.apply(dataset_dict, image, self.augmentation)

    def mosaic(self, records: list[dict]) -> tuple[np.ndarray, list[dict]]:
        """Steps 1-3 of the module docstring on four records: (canvas (H, W, 3) uint8, xyxy-pixel annotations)."""
        parts = [_resize_short_side(self.read(r), _xyxy_annotations(r), self.mosaic_size) for r in records]
        canvas, annos = paste_mosaic(parts)
        h, w = canvas.shape[:2]
        angle = np.random.uniform(-self.rotation, self.rotation)
        scale = np.random.uniform(*self.scaling)
        tx = round(np.random.uniform(-self.translation[0] * w, self.translation[0] * w))
        ty = round(np.random.uniform(-self.translation[1] * h, self.translation[1] * h))
        matrix = mosaic_affine_matrix(h, w, angle, scale, tx, ty)
        canvas = warp_image(canvas, matrix)
        boxes = affine_boxes(np.array([a["bbox"] for a in annos]).reshape(-1, 4), matrix, h, w)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        annos = [{**a, "bbox": b.tolist()} for a, b, k in zip(annos, boxes, keep) if k]
        return canvas, annos

