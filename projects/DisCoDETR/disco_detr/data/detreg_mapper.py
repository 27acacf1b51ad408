"""The single-view DatasetMapper of DETReg pre-training (Bar et al., CVPR 2022).

One unlabelled image and its offline selective-search proposals become one augmented view,
the first ``num_proposals`` proposals (in the store's order: selective search's output order)
in view pixels, and a ``crop_size`` x ``crop_size`` crop of each proposal for the embedding
target. Coordinates: *original* pixels of the file, *view* pixels of the augmented image.

View geometry (the release's detection transform): horizontal flip with ``flip_prob``; then,
each with probability 1/2, either a resize with the short side from ``scales`` (long side at
most ``max_size``), or a resize with the short side from ``crop_resize_sizes`` (no cap), a
random crop of width and height uniform in ``crop_size_range`` (at most the image), and the
first resize again. Boxes follow the geometry, are clipped to the crop, and boxes left
without area are dropped.

Crops: each proposal cut from the *original* image (the whole box, as the release does),
resized to ``crop_size``, then colour-augmented one by one (SimCLR's jitter 0.4/0.4/0.4/0.1
with p 0.8, grayscale 0.2, blur sigma 0.1-2 with p 0.5; :mod:`disco_detr.data.photometric`),
in the data worker. Crops stay aligned with the boxes that survive the view's crop (the release
drops boxes but keeps every crop, so its rows can pair a box with another box's crop).

An image with fewer than ``min_boxes`` boxes in its view raises, so the training loader logs
it and draws another image (the release replaces such samples too).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..structures import SingleViewBatch
from .image_io import read_rgb_image
from .photometric import apply_photometric, draw_photometric_params
from .pretrain_mapper import ProposalReader, crop_and_resize, to_uint8

__all__ = ["DETRegMapper", "collate_single_views"]

#: the release's short sides for ImageNet-sized images (320-480, without 384)
DETREG_SCALES = (320, 336, 352, 368, 400, 416, 432, 448, 464, 480)


class DETRegMapper:
    """Maps an unlabelled dataset dict (``file_name``, ``proposals_file``, ``proposal_key``, see
    :func:`disco_detr.data.pretrain_datasets.register_unlabelled_images`) to a DETReg sample.

    Output (``k <= num_proposals`` boxes that survive the view's geometry):
      image (3, H, W) uint8 RGB, the view;
      boxes (k, 4) float32 xyxy view pixels;
      crops (k, 3, crop_size, crop_size) uint8, colour-augmented;
      image_id, file_name.
    """

    def __init__(self, *, scales=DETREG_SCALES, max_size: int = 600, crop_resize_sizes=(400, 500, 600),
                 crop_size_range=(384, 600), flip_prob: float = 0.5, num_proposals: int = 30, min_boxes: int = 2,
                 crop_size: int = 128, color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob: float = 0.8,
                 grayscale_prob: float = 0.2, blur_sigma=(0.1, 2.0), blur_prob: float = 0.5):
        if num_proposals < min_boxes or min_boxes < 1:
            raise ValueError(f"need num_proposals >= min_boxes >= 1, got {num_proposals} and {min_boxes}")
        if crop_size_range[0] > crop_size_range[1]:
            raise ValueError(f"crop_size_range must be (min, max), got {crop_size_range}")
        self.scales = tuple(scales)
        self.max_size = max_size
        self.crop_resize_sizes = tuple(crop_resize_sizes)
        self.crop_size_range = tuple(int(v) for v in crop_size_range)
        self.flip_prob = flip_prob
        self.num_proposals = num_proposals
        self.min_boxes = min_boxes
        self.crop_size = crop_size
        self.photometric_kwargs = dict(color_jitter=tuple(color_jitter), color_jitter_prob=color_jitter_prob,
                                       grayscale_prob=grayscale_prob, blur_sigma=tuple(blur_sigma), blur_prob=blur_prob)
        self.load_proposals = ProposalReader()

    @staticmethod
    def collate(samples: list[dict]) -> SingleViewBatch:
        """The batch of these samples: :func:`collate_single_views`."""
        return collate_single_views(samples)

    @staticmethod
    def _short_side_scale(h: float, w: float, short: int, max_size: int | None) -> float:
        scale = short / min(h, w)
        if max_size is not None:
            scale = min(scale, max_size / max(h, w))
        return scale

    def view_region(self, h0: int, w0: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        """The view as a region of the original image: (xyxy original pixels, (view h, view w))."""
        region = np.array([0.0, 0.0, w0, h0])
        if rng.random() >= 0.5:  # resize -> random crop -> resize
            s = self._short_side_scale(h0, w0, self.crop_resize_sizes[rng.integers(len(self.crop_resize_sizes))], None)
            h1, w1 = int(round(h0 * s)), int(round(w0 * s))
            lo, hi = self.crop_size_range
            cw = int(rng.integers(min(lo, w1), min(w1, hi) + 1))
            ch = int(rng.integers(min(lo, h1), min(h1, hi) + 1))
            x, y = int(rng.integers(0, w1 - cw + 1)), int(rng.integers(0, h1 - ch + 1))
            region = np.array([x, y, x + cw, y + ch], dtype=np.float64) / s
        rh, rw = region[3] - region[1], region[2] - region[0]
        s = self._short_side_scale(rh, rw, self.scales[rng.integers(len(self.scales))], self.max_size)
        return region, (max(1, int(round(rh * s))), max(1, int(round(rw * s))))

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.copy(dataset_dict)
        rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        image = read_rgb_image(record["file_name"])
        h0, w0 = image.shape[:2]
        proposals, _ = self.load_proposals(record, (h0, w0))
        proposals = proposals.reshape(-1, 4)[: self.num_proposals]
        source = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float()

        flipped = bool(rng.random() < self.flip_prob)
        region, (vh, vw) = self.view_region(h0, w0, rng)
        if flipped:  # the region was drawn in the flipped image: the same region mirrored in the original
            region = np.array([w0 - region[2], region[1], w0 - region[0], region[3]])
        view = crop_and_resize(source, torch.from_numpy(region[None]), (vh, vw))[0]
        boxes = proposals.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(region[0], region[2])
        boxes[:, 1::2] = boxes[:, 1::2].clip(region[1], region[3])
        keep = ((boxes[:, 2:] - boxes[:, :2]) > 0).all(1)
        if keep.sum() < self.min_boxes:
            raise ValueError(f"{record['file_name']}: {int(keep.sum())} of its first {len(proposals)} proposals "
                             f"fall inside the view, fewer than {self.min_boxes}")
        sx, sy = vw / (region[2] - region[0]), vh / (region[3] - region[1])
        boxes = (boxes[keep] - np.tile(region[:2], 2)) * np.array([sx, sy, sx, sy])
        if flipped:
            view = view.flip(-1)
            boxes = np.stack([vw - boxes[:, 2], boxes[:, 1], vw - boxes[:, 0], boxes[:, 3]], 1)

        size = (self.crop_size, self.crop_size)
        crops = to_uint8(crop_and_resize(source, torch.from_numpy(proposals[keep]), size))
        crops = apply_photometric(crops, draw_photometric_params(len(crops), rng, **self.photometric_kwargs))
        return {
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "image": to_uint8(view),
            "boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "crops": crops,
        }


def collate_single_views(samples: list[dict]) -> SingleViewBatch:
    """Batch DETReg samples into a :class:`~disco_detr.structures.SingleViewBatch`: images (B, 3, H, W)
    uint8 zero-padded to the largest of the batch, boxes (B, K, 4) xyxy view pixels and crops
    (B, K, 3, s, s) uint8 with zero rows after each image's own box count (K = the batch's largest)."""
    sizes = [tuple(s["image"].shape[-2:]) for s in samples]
    hmax, wmax = max(h for h, _ in sizes), max(w for _, w in sizes)
    counts = [len(s["boxes"]) for s in samples]
    k = max(counts)
    b, crop = len(samples), samples[0]["crops"].shape[-3:]
    images = torch.zeros(b, 3, hmax, wmax, dtype=torch.uint8)
    boxes = torch.zeros(b, k, 4)
    crops = torch.zeros(b, k, *crop, dtype=torch.uint8)
    for i, s in enumerate(samples):
        h, w = sizes[i]
        images[i, :, :h, :w] = s["image"]
        boxes[i, : counts[i]] = s["boxes"]
        crops[i, : counts[i]] = s["crops"]
    return SingleViewBatch(images=images, image_sizes=sizes, boxes=boxes, num_boxes=counts, crops=crops)
