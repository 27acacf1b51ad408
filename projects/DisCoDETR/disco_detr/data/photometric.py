"""Photometric augmentation of DisCo / Siamese DETR pre-training, batched on the training device.

The CPU workers do the geometry only; each sample carries the parameters of its photometric
augmentation, drawn in the worker from the sample's own RNG (so they are a function of
``(seed, stream position)`` and a resumed run gets the same ones), and the training loop applies
them to the whole batch before the forward with the batch transform :class:`PairedViewPhotometric`
(``dataloader.batch_transform``).

The augmentation is the one of the all-on-CPU path (torchvision v2 transforms, one image at a
time): ``RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8)`` with its random order of the
four operations, ``RandomGrayscale(p=0.2)``, then a Gaussian blur with sigma uniform in
[0.1, 2.0] (kernel size ``max(3, 2 ceil(3 sigma) + 1)``, reflect padding) with p = 0.5, each
image (view or crop) with its own parameters.

Why hand-written and not kornia or torchvision: torchvision's functional ops take one scalar
factor per call, so a batch of 32 samples (704 images) would cost thousands of small kernel
launches per step; kornia batches per-sample factors but works on float images (no uint8
rounding between operations), draws one operation order per batch, and blurs every image with
one kernel size, so neither reproduces the CPU path's output. The functions below follow
torchvision's formulas for uint8 tensors step by step (float32 arithmetic, truncation to
integers after each colour operation, rounding after the blur), vectorised over images with
per-image factors, and are tested against torchvision's per-image functional ops.

Parameter layout (``K`` images, one row each): ``jitter`` (K,) bool, ``factors`` (K, 4) float32
(brightness, contrast, saturation, hue), ``order`` (K, 4) int64 (the colour operation applied
at each of the four slots: 0 brightness, 1 contrast, 2 saturation, 3 hue), ``grayscale`` (K,)
bool, ``blur`` (K,) bool, ``sigma`` (K,) float32. A paired-view sample holds ``K = 2 + 2n`` rows:
view 1, view 2, then the crops of view 1 and of view 2 (``crops.flatten(0, 1)`` order).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import roi_align

from ..structures import PairedViewBatch

__all__ = [
    "PARAM_KEYS",
    "draw_photometric_params",
    "apply_photometric",
    "PairedViewPhotometric",
    "blur_kernel_size",
    "cut_crops",
]

PARAM_KEYS = ("jitter", "factors", "order", "grayscale", "blur", "sigma")
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def blur_kernel_size(sigma: float) -> int:
    """The CPU path's Gaussian kernel size for ``sigma``: ``max(3, 2 ceil(3 sigma) + 1)``."""
    return max(3, int(2 * math.ceil(3 * sigma) + 1))


def _jitter_range(value: float, center: float, clip_at_zero: bool) -> tuple[float, float]:
    low, high = center - value, center + value
    return (max(low, 0.0) if clip_at_zero else low), high


def draw_photometric_params(num_images: int, rng: np.random.Generator, *,
                            color_jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), color_jitter_prob: float = 0.8,
                            grayscale_prob: float = 0.2, blur_sigma: Sequence[float] = (0.1, 2.0),
                            blur_prob: float = 0.5) -> dict[str, Tensor]:
    """Photometric parameters of ``num_images`` images, drawn from ``rng`` (see the module doc).

    The distributions are torchvision's: the jitter is applied with ``color_jitter_prob``; its
    factors are uniform in ``[max(0, 1 - b), 1 + b]``, ``[max(0, 1 - c), 1 + c]``,
    ``[max(0, 1 - s), 1 + s]`` and ``[-h, h]``; the order is a uniform random permutation of the
    four operations; grayscale with ``grayscale_prob``; blur with ``blur_prob`` and sigma
    uniform in ``blur_sigma``. Factors and sigma are drawn for every image (used only where the
    flag is set) so that the number of draws does not depend on the flags.
    """
    b, c, s, h = (float(v) for v in color_jitter)
    if not 0 <= h <= 0.5:
        raise ValueError(f"hue jitter must be in [0, 0.5], got {h}")
    k = num_images
    ranges = np.array([_jitter_range(b, 1, True), _jitter_range(c, 1, True), _jitter_range(s, 1, True), (-h, h)])
    jitter = rng.random(k) < color_jitter_prob
    factors = ranges[:, 0] + rng.random((k, 4)) * (ranges[:, 1] - ranges[:, 0])
    order = np.argsort(rng.random((k, 4)), axis=1)  # argsort of i.i.d. uniforms: a uniform permutation
    grayscale = rng.random(k) < grayscale_prob
    blur = rng.random(k) < blur_prob
    sigma = rng.uniform(blur_sigma[0], blur_sigma[1], k)
    return {
        "jitter": torch.from_numpy(jitter),
        "factors": torch.from_numpy(factors.astype(np.float32)),
        "order": torch.from_numpy(order.astype(np.int64)),
        "grayscale": torch.from_numpy(grayscale),
        "blur": torch.from_numpy(blur),
        "sigma": torch.from_numpy(sigma.astype(np.float32)),
    }


# ---- the operations, on float32 images holding integer values 0..255 ------------------------
# x: (M, 3, H, W) float32, f: (M,) float32 factors, valid: (M, H, W) bool or None (True on the image).
def _per_image(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def _gray(x: Tensor) -> Tensor:
    """(M, 3, H, W) -> (M, 1, H, W) luma, not yet truncated (same op order as torchvision)."""
    r, g, b = x.unbind(1)
    return r.mul(_GRAY_WEIGHTS[0]).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, f: Tensor) -> Tensor:
    """torchvision's uint8 ``_blend``: f x + (1 - f) other, clamped, truncated to an integer.
    ``1 - f`` is formed in float64 as torchvision does with its python float ratio, and added
    with a fused multiply-add (``addcmul``) as its ``add_(other, alpha=1 - f)`` does: a separate
    multiply and add rounds differently on about 0.5 % of the pixels."""
    one_minus = (1.0 - f.double()).float()
    return torch.addcmul(x * _per_image(f), other, _per_image(one_minus)).clamp_(0, 255).floor_()


def _brightness(x: Tensor, f: Tensor, valid: Tensor | None) -> Tensor:
    return (x * _per_image(f)).clamp_(0, 255).floor_()


def _contrast(x: Tensor, f: Tensor, valid: Tensor | None) -> Tensor:
    gray = _gray(x).floor_()
    if valid is None:
        mean = gray.mean((1, 2, 3), keepdim=True)
    else:  # the mean of the image only, not of its padding
        m = valid[:, None].to(gray.dtype)
        mean = (gray * m).sum((1, 2, 3), keepdim=True) / m.sum((1, 2, 3), keepdim=True).clamp_(min=1)
    return _blend(x, mean, f)


def _saturation(x: Tensor, f: Tensor, valid: Tensor | None) -> Tensor:
    return _blend(x, _gray(x).floor_(), f)


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(M, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn; hue and
    saturation 0 where the pixel is grey, as PIL and torchvision)."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    span = maxc - minc
    grey = span == 0
    sat = span / torch.where(grey, torch.ones_like(maxc), maxc)
    span_safe = torch.where(grey, torch.ones_like(span), span)
    rc, gc, bc = (maxc - r) / span_safe, (maxc - g) / span_safe, (maxc - b) / span_safe
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    hue = (hue * (1.0 / 6.0) + 1.0).fmod(1.0)
    return torch.stack([hue, sat, maxc], 1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`_rgb_to_hsv`: (M, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    hue, sat, val = hsv.unbind(1)
    h6 = hue * 6.0
    sector = h6.floor()
    frac = h6 - sector
    sector = sector.long().remainder(6)
    q = ((1.0 - sat * frac) * val).clamp(0, 1)
    t = ((sat * frac + (1.0 - sat)) * val).clamp(0, 1)
    p = ((1.0 - sat) * val).clamp(0, 1)
    # per sector (0..5): which of v, p, q, t is r, g, b
    table = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=hsv.device)
    choices = torch.stack([val, p, q, t], 1)  # (M, 4, H, W)
    index = table[:, sector].movedim(0, 1)  # (M, 3, H, W)
    return choices.gather(1, index)


def _hue(x: Tensor, f: Tensor, valid: Tensor | None) -> Tensor:
    hsv = _rgb_to_hsv(x * (1.0 / 255.0))
    hsv[:, 0] = (hsv[:, 0] + f.view(-1, 1, 1)).remainder(1.0)
    # torchvision's float -> uint8 conversion: multiply by 256 - 1e-3 and truncate
    return (_hsv_to_rgb(hsv) * (255.0 + 1.0 - 1e-3)).floor_()


_COLOUR_OPS = (_brightness, _contrast, _saturation, _hue)


def _reflect_index(length: Tensor, size: int, radius: int, device) -> Tensor:
    """Per image, source indices of a reflect-padded axis: length (M,) valid lengths -> (M, size
    + 2 radius) indices in [0, length) (position t - radius reflected at the image's own edges,
    so the padding of a batch never enters a blurred image)."""
    t = torch.arange(-radius, size + radius, device=device)[None].expand(len(length), -1)
    n = length[:, None].clamp(min=1)
    period = (2 * (n - 1)).clamp(min=1)
    m = t.remainder(period)
    out = torch.where(m < n, m, period - m)
    return torch.where(n == 1, torch.zeros_like(out), out)


def _gaussian_blur(x: Tensor, sigma: Tensor, valid_hw: Tensor) -> Tensor:
    """Separable Gaussian blur with one sigma per image, as torchvision's ``gaussian_blur``
    with kernel size :func:`blur_kernel_size` and reflect padding at each image's own border.

    x (M, C, H, W) float32; sigma (M,); valid_hw (M, 2) int64 (h, w) of each image in the
    top-left of the padded batch. Images get kernels of the batch's largest size with zero
    weights beyond their own half-width, which gives the same sums as their own kernel.
    """
    m, c, h, w = x.shape
    sig = sigma.double().tolist()
    radii = [blur_kernel_size(s) // 2 for s in sig]
    radius = max(radii)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    own = torch.tensor(radii, dtype=torch.float32, device=x.device)[:, None]
    logits = -(offsets[None] ** 2) / (2 * sigma.float()[:, None] ** 2)
    logits = logits.masked_fill(offsets[None].abs() > own, float("-inf"))
    kernel = torch.softmax(logits, dim=1)  # (M, 2R+1), normalised over each image's own support
    rows = _reflect_index(valid_hw[:, 0], h, radius, x.device)  # (M, H + 2R)
    cols = _reflect_index(valid_hw[:, 1], w, radius, x.device)  # (M, W + 2R)
    # along the width
    padded = x.gather(3, cols[:, None, None, :].expand(m, c, h, -1))
    weight = kernel.repeat_interleave(c, 0)[:, None, None, :]  # (M*C, 1, 1, 2R+1)
    x = F.conv2d(padded.reshape(1, m * c, h, -1), weight, groups=m * c).view(m, c, h, w)
    # along the height
    padded = x.gather(2, rows[:, None, :, None].expand(m, c, -1, w))
    x = F.conv2d(padded.reshape(1, m * c, -1, w), weight.transpose(2, 3), groups=m * c).view(m, c, h, w)
    return x.round_()


def apply_photometric(images: Tensor, params: dict[str, Tensor], image_sizes: Tensor | None = None) -> Tensor:
    """Apply each image's own colour jitter (in its own order), grayscale and blur.

    Args:
        images: (M, 3, H, W) uint8 RGB (any device); images smaller than (H, W) sit in the
            top-left corner with padding around them.
        params: the keys of :data:`PARAM_KEYS`, each with M rows, on any device.
        image_sizes: (M, 2) (h, w) of each image, or None when none is padded. The contrast
            mean and the blur's reflect padding use each image's own pixels only; the padding
            of the output is zero.

    Returns (M, 3, H, W) uint8 on ``images.device``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (M, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    device = images.device
    m, _, h, w = images.shape
    p = {k: params[k].to(device) for k in PARAM_KEYS}
    if any(len(v) != m for v in p.values()):
        raise ValueError(f"photometric parameters for {[len(v) for v in p.values()]} images, got {m} images")
    if image_sizes is None:
        sizes = torch.tensor([[h, w]], device=device).expand(m, 2)
        valid = None
    else:
        sizes = torch.as_tensor(image_sizes, device=device).long().view(m, 2)
        valid = (torch.arange(h, device=device)[None, :, None] < sizes[:, 0, None, None]) & \
                (torch.arange(w, device=device)[None, None, :] < sizes[:, 1, None, None])
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        x = images.float()
        for slot in range(4):
            for op_id, op in enumerate(_COLOUR_OPS):
                idx = torch.nonzero(p["jitter"] & (p["order"][:, slot] == op_id)).flatten()
                if len(idx):
                    x[idx] = op(x[idx], p["factors"][idx, op_id], None if valid is None else valid[idx])
        idx = torch.nonzero(p["grayscale"]).flatten()
        if len(idx):
            x[idx] = _gray(x[idx]).floor_().expand(-1, 3, -1, -1)
        idx = torch.nonzero(p["blur"]).flatten()
        if len(idx):
            x[idx] = _gaussian_blur(x[idx], p["sigma"][idx], sizes[idx])
        if valid is not None:
            x = x * valid[:, None]
        return x.to(torch.uint8)


def cut_crops(images: Tensor, boxes: Tensor, image_sizes: Tensor, crop_size: int) -> Tensor:
    """The crops of the boxes from the (un-augmented) images of a padded batch, on the images' device.

    images (M, 3, H, W) uint8 with each image in the top-left (h_i, w_i) of ``image_sizes`` (M, 2);
    boxes (M, n, 4) xyxy image pixels -> (M, n, 3, s, s) uint8: RoIAlign with aligned pixel centres and
    adaptive sampling, as the mapper's ``crop_and_resize``. RoIAlign clamps samples at the tensor's
    border, which for a padded image lies beyond the image: so that the half-pixel band at the image's
    right and bottom edge interpolates with the image's own last pixel (as on the unpadded image) and
    not with the padding, the first padding column and row are set to copies of the last image column
    and row first.
    """
    m, c, h, w = images.shape
    n = boxes.shape[1]
    x = images.float()
    sizes = torch.as_tensor(image_sizes, device=x.device).long().view(m, 2)
    idx = torch.arange(m, device=x.device)
    has_col, has_row = sizes[:, 1] < w, sizes[:, 0] < h
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    if has_col.any():  # x[i, :, :, w_i] = x[i, :, :, w_i - 1]
        i, col = idx[has_col], sizes[has_col, 1]
        x[i[:, None], :, rows[None], col[:, None]] = x[i[:, None], :, rows[None], col[:, None] - 1]
    if has_row.any():  # x[i, :, h_i, :] = x[i, :, h_i - 1, :] (after the column: the corner too)
        i, row = idx[has_row], sizes[has_row, 0]
        x[i[:, None], :, row[:, None], cols[None]] = x[i[:, None], :, row[:, None] - 1, cols[None]]
    ids = torch.arange(m, device=x.device, dtype=x.dtype).repeat_interleave(n)[:, None]
    rois = torch.cat([ids, boxes.to(x).reshape(-1, 4)], 1)
    with torch.autocast(x.device.type, enabled=False):
        crops = roi_align(x, rois, output_size=(crop_size, crop_size), spatial_scale=1.0, sampling_ratio=0,
                          aligned=True)
    return crops.round_().clamp_(0, 255).to(torch.uint8).view(m, n, c, crop_size, crop_size)


class PairedViewPhotometric:
    """The batch transform of DisCo / Siamese DETR pre-training with ``PairedViewMapper(photometric="device")``:
    the training loop calls it on each :class:`~disco_detr.structures.PairedViewBatch` once the batch is on
    the training device, before the forward (config key ``dataloader.batch_transform``).

    It cuts the crops where the mapper left them to the device (``crops_on_device``: :func:`cut_crops`
    from the un-augmented views), then applies every view's and every crop's own colour parameters
    (:func:`apply_photometric`), and returns the batch with ``crops`` set and no parameters left. The
    parameters were drawn in the data workers, so it draws nothing itself.

    On a CPU the views are augmented one sample (two views) at a time at their own size, where the
    padding would cost its full price; on an accelerator all views go in one padded call.
    """

    #: the config key that names this transform, for the messages
    CONFIG_KEY = "dataloader.batch_transform"

    def __call__(self, batch: PairedViewBatch) -> PairedViewBatch:
        if not isinstance(batch, PairedViewBatch):
            raise TypeError(f"{self.CONFIG_KEY}=PairedViewPhotometric needs PairedViewMapper batches, got "
                            f"{type(batch).__name__}; set {self.CONFIG_KEY}=None for this loader")
        if not batch.photometric_pending:
            raise ValueError(f"{self.CONFIG_KEY}=PairedViewPhotometric got a batch without photometric parameters "
                             "(its mapper augments on the CPU, photometric='cpu'); set "
                             f"{self.CONFIG_KEY}=None (null on the command line), or the mapper's photometric='device'")
        images, device = batch.images, batch.images.device
        b = batch.num_samples
        crops = batch.crops
        if crops is None:
            crops = cut_crops(images, batch.boxes, torch.as_tensor(batch.image_sizes), batch.crop_size)
        p = batch.view_photometric
        if device.type == "cpu":
            out = torch.zeros_like(images)
            for i, (h, w) in enumerate(batch.image_sizes[:b]):
                pair = [i, b + i]  # the two views of sample i
                out[pair, :, :h, :w] = apply_photometric(images[pair, :, :h, :w], {k: v[pair] for k, v in p.items()})
        else:
            out = apply_photometric(images, p, torch.as_tensor(batch.image_sizes, device=device))
        crops = apply_photometric(crops.flatten(0, 1), batch.crop_photometric).view(crops.shape)
        return dataclasses.replace(batch, images=out, crops=crops, view_photometric=None, crop_photometric=None)
