"""The paired-view DatasetMapper of DisCo / Siamese DETR pre-training (their two-view data pipeline).

One unlabelled image and its offline proposals become two overlapping views of the same
size, ``n`` boxes that are the same physical regions in both views, and 128 x 128 crops of
those boxes. Coordinates:

* *source*: pixels of the image after the random resize and the shared flip;
* *view v*: pixels of view v, i.e. ``view_regions[v]`` of the source resized to the view
  size (the outer box size, the same for both views).

Colour augmentation is applied to each view and each crop independently, after cropping.
With ``photometric="device"`` (the default) the mapper only draws its parameters (from the
sample's RNG, so they are a function of ``(seed, stream position)``) and the training loop applies
them to the whole batch on its device (the batch transform
:class:`disco_detr.data.photometric.PairedViewPhotometric`, ``dataloader.batch_transform``);
``photometric="cpu"`` is the original all-on-CPU path (torchvision transforms per image).
Images stay uint8 RGB; ImageNet normalisation is the model's job (``pixel_mean/std``),
as for the detector's fine-tuning inputs.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2 as TV

from ..structures import PairedViewBatch
from .image_io import read_rgb_image
from .photometric import PARAM_KEYS, draw_photometric_params
from .proposal_store import ProposalStore

__all__ = [
    "PairedViewMapper",
    "intersection_height",
    "two_view_boxes",
    "crop_and_resize",
    "collate_paired_views",
]


def intersection_height(width: float, height: float, iou: float) -> float:
    """Height h of the centred intersection rectangle (aspect W/H) that gives two boxes
    A = [outer top-left, intersection bottom-right] and B = [intersection top-left, outer
    bottom-right] the IoU ``iou``: the positive root of
    (a*iou + 2a) h^2 - iou (aH + W) h - iou W H = 0 with a = W / H."""
    a = width / height
    qa, qb, qc = a * iou + 2 * a, -iou * (a * height + width), -iou * width * height
    return (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)


def two_view_boxes(outer: np.ndarray, iou: float, shift_a: float = 0.0, shift_b: float = 0.0):
    """Boxes of the two views inside ``outer`` (xyxy, source pixels).

    Returns (A, B, I): A runs from the outer top-left to the bottom-right of the centred
    intersection I, B from I's top-left to the outer bottom-right; IoU(A, B) = ``iou``.
    ``shift_a`` / ``shift_b`` in [0, 1] move A's top-left / B's bottom-right corner inward
    by that fraction of the distance to I's corner, keeping the aspect ratio (the IoU rises,
    I is unchanged).
    """
    x0, y0, x1, y1 = (float(v) for v in outer)
    width, height = x1 - x0, y1 - y0
    h = intersection_height(width, height, iou)
    w = h * width / height
    inter = np.array([x0 + (width - w) / 2, y0 + (height - h) / 2, x0 + (width + w) / 2, y0 + (height + h) / 2])
    box_a = np.array([x0, y0, inter[2], inter[3]])
    box_b = np.array([inter[0], inter[1], x1, y1])
    box_a[:2] += shift_a * (inter[:2] - box_a[:2])  # the same fraction on x and y keeps the aspect
    box_b[2:] += shift_b * (inter[2:] - box_b[2:])
    return box_a, box_b, inter


def crop_and_resize(image: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear crops of float xyxy pixel boxes: image (3, H, W) float, boxes (K, 4) ->
    (K, 3, size[0], size[1]). Each output pixel samples the box at its own position
    (pixel centres aligned), averaging ceil(box/output) samples per bin when shrinking; a
    box of exactly the output size on integer coordinates returns the pixels unchanged."""
    rois = torch.cat([torch.zeros(len(boxes), 1, dtype=image.dtype), boxes.to(image.dtype)], 1)
    return roi_align(image[None], rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels -> uint8 (rounded, clamped to 0..255)."""
    return x.round().clamp(0, 255).to(torch.uint8)


class ProposalReader:
    """Reads an image's offline proposals from the store its dataset dict names (one open store per
    file, per process), checked against the image."""

    def __init__(self):
        self._stores: dict[str, ProposalStore] = {}

    def __call__(self, record: dict, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The proposals (K, 4) xyxy original pixels (float64, in the store's order) and scores (K,) of
        ``record`` ("file_name", "proposals_file", "proposal_key") for an image of ``image_hw``."""
        path = record["proposals_file"]
        if path not in self._stores:
            self._stores[path] = ProposalStore(path, mode="r")
        props = self._stores[path].get(record["proposal_key"])
        if props is None:
            raise KeyError(f"{record['file_name']}: no proposals for key {record['proposal_key']!r} in "
                           f"{path}; rerun tools/generate_proposals.py on this image folder "
                           "(it resumes and only adds what is missing)")
        if (props.height, props.width) != tuple(image_hw):
            raise ValueError(f"{record['file_name']}: proposals in {path} were computed on a "
                             f"{props.height}x{props.width} image but the file is {image_hw[0]}x{image_hw[1]}; "
                             "the proposals file does not match the dataset")
        return props.boxes.astype(np.float64), props.scores


def _sample_outer_box(width: int, height: int, scale, ratio, rng: np.random.Generator) -> np.ndarray:
    """RandomResizedCrop's box (integer xyxy) inside a (width, height) image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            return np.array([x, y, x + w, y + h], dtype=np.float64)
    # fallback: the largest centred box with an allowed aspect ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    x, y = (width - w) // 2, (height - h) // 2
    return np.array([x, y, x + w, y + h], dtype=np.float64)


class PairedViewMapper:
    """Maps an unlabelled dataset dict to a DisCo pre-training sample.

    The dict needs "file_name", "proposals_file" and "proposal_key" (see
    :func:`disco_detr.data.pretrain_datasets.register_unlabelled_images`).

    Output (``n = num_boxes``):
      views (2, 3, H, W) uint8 RGB, both views the same size (not yet colour-augmented with
        ``photometric="device"``);
      boxes (2, n, 4) float32, xyxy in view pixels, row i the same physical box in both views,
        row 0 the intersection region of the two views;
      crops (2, n, 3, crop_size, crop_size) uint8, each box cropped from its view before colour
        augmentation, then colour-augmented independently (on the device later with
        ``photometric="device"``); with ``crops_on_device=True`` there are no crops here but
        ``crop_size``, and :class:`~disco_detr.data.photometric.PairedViewPhotometric` cuts them from
        the batch's views on the device (same RoIAlign; they differ from CPU crops by at most one
        level because the device cuts them from the uint8 views, the CPU from the float ones);
      photometric (only with ``photometric="device"``): the colour parameters of the 2 + 2n
        images (views, then crops), see :mod:`disco_detr.data.photometric`;
      view_regions (2, 4) float32, xyxy of each view in source pixels;
      source_size (H_s, W_s) of the resized source image; flipped (bool);
      num_proposals: how many rows came from proposals (the rest are jittered copies);
      image_id, file_name.

    View geometry: two boxes with IoU ``view_iou`` inside a
    RandomResizedCrop box, then each of A's top-left and B's bottom-right corners moves
    inward, with probability ``corner_shift_prob``, by a uniform fraction in
    [0, ``max_corner_shift``) of its distance to the intersection's corner. The defaults (1, 1)
    are the released code's rule (mean view IoU about 0.69, never exactly 0.5); (0.5, 0.5) gives
    a mean of about 0.54, a quarter of the pairs at exactly 0.5.

    ``photometric``: "device" (default) draws the colour parameters here and leaves applying
    them to :class:`disco_detr.data.photometric.PairedViewPhotometric` on the training device;
    "cpu" applies torchvision's transforms here, one image at a time (the original path).
    ``crops_on_device`` (only with ``photometric="device"``): leave cutting the crops to the
    device too (about half of the remaining CPU work and of the bytes a worker sends per sample).
    Images are read by :func:`disco_detr.data.image_io.read_rgb_image` (the project's one reader).

    Errors (logged and skipped by the training loader): unreadable image, no proposals
    entry for the image, proposals computed on an image of another size.
    """

    def __init__(self, *, min_sizes=tuple(range(320, 481, 16)), max_size: int = 600, flip_prob: float = 0.5,
                 crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3), view_iou: float = 0.5,
                 corner_shift_prob: float = 1.0, max_corner_shift: float = 1.0, num_boxes: int = 10,
                 min_area_fraction: float = 0.05, jitter: float = 0.1, crop_size: int = 128,
                 color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob: float = 0.8,
                 grayscale_prob: float = 0.2, blur_sigma=(0.1, 2.0), blur_prob: float = 0.5,
                 photometric: str = "device", crops_on_device: bool = False):
        if num_boxes < 1:
            raise ValueError(f"num_boxes must be >= 1, got {num_boxes}")
        if photometric not in ("device", "cpu"):
            raise ValueError(f"photometric must be 'device' or 'cpu', got {photometric!r}")
        if crops_on_device and photometric != "device":
            raise ValueError("crops_on_device=True needs photometric='device' (CPU crops are colour-augmented here)")
        if not (0 <= corner_shift_prob <= 1 and 0 <= max_corner_shift <= 1):
            raise ValueError(f"corner_shift_prob and max_corner_shift must be in [0, 1], got {corner_shift_prob}, "
                             f"{max_corner_shift}")
        self.min_sizes = tuple(min_sizes)
        self.max_size = max_size
        self.flip_prob = flip_prob
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.view_iou = view_iou
        self.corner_shift_prob = corner_shift_prob
        self.max_corner_shift = max_corner_shift
        self.num_boxes = num_boxes
        self.min_area_fraction = min_area_fraction
        self.jitter = jitter
        self.crop_size = crop_size
        self.color_jitter = TV.RandomApply([TV.ColorJitter(*color_jitter)], p=color_jitter_prob)
        self.grayscale = TV.RandomGrayscale(p=grayscale_prob)
        self.blur_sigma = tuple(blur_sigma)
        self.blur_prob = blur_prob
        self.photometric = photometric
        self.crops_on_device = crops_on_device
        self.photometric_kwargs = dict(color_jitter=tuple(color_jitter), color_jitter_prob=color_jitter_prob,
                                       grayscale_prob=grayscale_prob, blur_sigma=self.blur_sigma, blur_prob=blur_prob)
        self.load_proposals = ProposalReader()

    @staticmethod
    def collate(samples: list[dict]) -> PairedViewBatch:
        """The batch of these samples: :func:`collate_paired_views`."""
        return collate_paired_views(samples)

    # ---- randomness: numpy for geometry, torch for colour (both seeded per sample) ----
    @staticmethod
    def _rng() -> np.random.Generator:
        return np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))

    def select_boxes(self, proposals: np.ndarray, inter: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Box 0 = the intersection; then the best proposals clipped to it (area >= the
        minimum fraction, proposals already in score order); then jittered copies.
        Returns (n, 4) xyxy source pixels and the number of proposal rows."""
        clipped = proposals.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(inter[0], inter[2])
        clipped[:, 1::2] = clipped[:, 1::2].clip(inter[1], inter[3])
        wh = clipped[:, 2:] - clipped[:, :2]
        inter_area = (inter[2] - inter[0]) * (inter[3] - inter[1])
        valid = (wh > 0).all(1) & (wh.prod(1) >= self.min_area_fraction * inter_area)
        chosen = clipped[valid][: self.num_boxes - 1]
        boxes = [inter, *chosen]
        sources = list(chosen) if len(chosen) else [inter]
        k = 0
        while len(boxes) < self.num_boxes:
            boxes.append(self._jitter(sources[k % len(sources)], inter, rng))
            k += 1
        return np.stack(boxes), len(chosen)

    def _jitter(self, box: np.ndarray, inter: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each coordinate moved by up to +-jitter of the box size, clamped to ``inter``;
        a jitter that would empty the box is redrawn (after 10 tries the box is kept)."""
        size = np.tile(box[2:] - box[:2], 2)
        for _ in range(10):
            out = box + rng.uniform(-self.jitter, self.jitter, 4) * size
            out[0::2] = out[0::2].clip(inter[0], inter[2])
            out[1::2] = out[1::2].clip(inter[1], inter[3])
            if (out[2:] - out[:2] > 1e-3).all():
                return out
        return box.copy()

    def sample_view_regions(self, width: int, height: int, rng: np.random.Generator):
        """Step 3 for a (width, height) source: returns (regions (2, 4) xyxy source pixels of
        view 1 and view 2, intersection (4,), outer box (4,)), all float64."""
        outer = _sample_outer_box(width, height, self.crop_scale, self.crop_ratio, rng)
        shifts = [rng.uniform(0, self.max_corner_shift) if rng.random() < self.corner_shift_prob else 0.0
                  for _ in range(2)]
        box_a, box_b, inter = two_view_boxes(outer, self.view_iou, *shifts)
        regions = np.stack([box_b, box_a] if rng.random() < 0.5 else [box_a, box_b])
        return regions, inter, outer

    def colour_augment(self, images: torch.Tensor) -> torch.Tensor:
        """Independent colour jitter / grayscale / blur of each (3, h, w) uint8 image."""
        out = []
        for img in images:
            img = self.grayscale(self.color_jitter(img))
            if torch.rand(()) < self.blur_prob:
                sigma = float(torch.empty(()).uniform_(*self.blur_sigma))
                kernel = max(3, int(2 * math.ceil(3 * sigma) + 1))
                img = TV.functional.gaussian_blur(img, [kernel, kernel], [sigma, sigma])
            out.append(img)
        return torch.stack(out)

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.copy(dataset_dict)
        rng = self._rng()
        image = read_rgb_image(record["file_name"])
        h0, w0 = image.shape[:2]
        proposals, _ = self.load_proposals(record, (h0, w0))

        # 1. resize (short side from min_sizes, long side <= max_size), 2. shared flip
        short = self.min_sizes[rng.integers(len(self.min_sizes))]
        scale = min(short / min(h0, w0), self.max_size / max(h0, w0))
        hs, ws = max(1, int(round(h0 * scale))), max(1, int(round(w0 * scale)))
        source = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float()
        source = torch.nn.functional.interpolate(source[None], size=(hs, ws), mode="bilinear",
                                                 align_corners=False, antialias=scale < 1)[0]
        proposals = proposals * np.array([ws / w0, hs / h0, ws / w0, hs / h0])
        flipped = bool(rng.random() < self.flip_prob)
        if flipped:
            source = source.flip(-1)
            proposals = np.stack([ws - proposals[:, 2], proposals[:, 1], ws - proposals[:, 0], proposals[:, 3]], 1)

        # 3. two-view crop
        regions, inter, outer = self.sample_view_regions(ws, hs, rng)
        view_h, view_w = int(outer[3] - outer[1]), int(outer[2] - outer[0])
        views = crop_and_resize(source, torch.from_numpy(regions), (view_h, view_w))

        # 4-5. proposals in the intersection, n boxes, mapped into each view
        src_boxes, num_proposals = self.select_boxes(proposals.reshape(-1, 4), inter, rng)
        boxes = []
        for region in regions:
            sx = view_w / (region[2] - region[0])
            sy = view_h / (region[3] - region[1])
            boxes.append((src_boxes - np.tile(region[:2], 2)) * np.array([sx, sy, sx, sy]))
        boxes = torch.as_tensor(np.stack(boxes), dtype=torch.float32)

        # 6. crops before colour augmentation, 7. colour augmentation of views and crops
        size = (self.crop_size, self.crop_size)
        extra = {}
        if self.crops_on_device:
            views, crops = to_uint8(views), None
            extra["crop_size"] = self.crop_size
        else:
            crops = to_uint8(torch.stack([crop_and_resize(views[v], boxes[v], size) for v in range(2)]))
            views = to_uint8(views)
            extra["crops"] = crops
        if self.photometric == "cpu":
            views = self.colour_augment(views)
            extra["crops"] = self.colour_augment(crops.flatten(0, 1)).view(2, self.num_boxes, 3, *size)
        else:  # drawn last, so the geometry is the same as the CPU path's for the same seed
            extra["photometric"] = draw_photometric_params(2 + 2 * self.num_boxes, rng, **self.photometric_kwargs)
        return {
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "views": views,
            "boxes": boxes,
            "view_regions": torch.as_tensor(regions, dtype=torch.float32),
            "source_size": (hs, ws),
            "flipped": flipped,
            "num_proposals": num_proposals,
            **extra,
        }


def collate_paired_views(samples: list[dict]) -> PairedViewBatch:
    """Batch B paired-view samples into a view-major :class:`~disco_detr.structures.PairedViewBatch`:
    image ``v * B + b`` is view v of sample b, zero-padded to the largest (H, W) of the batch; boxes
    (2B, n, 4) and crops (2B, n, 3, s, s) follow the same order. Samples made with ``crops_on_device``
    give ``crops=None``; samples of ``photometric="device"`` give their colour parameters, split into
    the views' (2B rows) and the crops' (2B * n rows, ``crops.flatten(0, 1)`` order)."""
    b = len(samples)
    sizes = [tuple(s["views"].shape[-2:]) for s in samples]
    hmax, wmax = max(h for h, _ in sizes), max(w for _, w in sizes)
    images = torch.zeros(2 * b, 3, hmax, wmax, dtype=torch.uint8)
    for i, s in enumerate(samples):
        h, w = sizes[i]
        images[i, :, :h, :w] = s["views"][0]
        images[b + i, :, :h, :w] = s["views"][1]

    def view_major(key: str) -> torch.Tensor:  # per sample (2, ...) -> (2B, ...)
        return torch.stack([s[key] for s in samples], 1).flatten(0, 1)

    crops = view_major("crops") if "crops" in samples[0] else None
    view_params = crop_params = None
    if "photometric" in samples[0]:
        params = [s["photometric"] for s in samples]  # rows: view 1, view 2, view 1's n crops, view 2's n crops
        n = samples[0]["boxes"].shape[1]
        view_params = {k: torch.stack([p[k][:2] for p in params], 1).flatten(0, 1) for k in PARAM_KEYS}
        crop_params = {k: torch.stack([p[k][2:].unflatten(0, (2, n)) for p in params], 1).flatten(0, 2)
                       for k in PARAM_KEYS}
    return PairedViewBatch(
        images=images, image_sizes=sizes * 2, boxes=view_major("boxes"), crops=crops,
        crop_size=samples[0]["crop_size"] if crops is None else crops.shape[-1],
        view_photometric=view_params, crop_photometric=crop_params)
