"""Offline proposal generation: EdgeBoxes and selective search, their fallbacks, and sharded runs.

:func:`edge_boxes` (OpenCV ximgproc EdgeBoxes) and :func:`selective_search` (OpenCV ximgproc
selective search, fast mode) give xyxy boxes in pixels of the image they are given, scores
descending; :func:`compute_proposals` adds the fallbacks of the pre-training spec and returns a
:class:`~disco_detr.data.proposal_store.Proposals`; :func:`proposals_for_file` reads a file first.
``tools/generate_proposals.py`` runs them over an image set, optionally as shards
(:func:`shard_of`), which :func:`merge_stores` joins into one store.

The structured-edge (SED) model file that EdgeBoxes is normally paired with cannot be
downloaded here, so without ``sed_model`` the edge map is a colour gradient magnitude and the
orientation map the smoothed gradient direction; the edges are thinned by :func:`edge_nms`, a
small numpy/OpenCV non-maximum suppression along the gradient direction. OpenCV's own
``StructuredEdgeDetection.edgesNms`` and ``computeOrientation`` do not use the trained forest,
but they are methods of the ``StructuredEdgeDetection`` object, and
``createStructuredEdgeDetection`` refuses to build one without a readable model file (an
assertion in its constructor), so they cannot be called without the model. With ``sed_model``
the SED edges, orientation and NMS are used.
"""
from __future__ import annotations

import functools
import json
import os
import zlib

import cv2
import numpy as np

from ..data.image_io import read_rgb_image as read_image_rgb  # the one reader, under this module's public name
from ..data.proposal_store import METHODS, UNREADABLE, Proposals, ProposalStore

__all__ = [
    "SHARED_META",
    "compute_proposals",
    "edge_boxes",
    "edge_map",
    "edge_nms",
    "enhance_image",
    "merge_stores",
    "meta_differences",
    "parse_shard",
    "proposals_for_file",
    "read_image_rgb",
    "selective_search",
    "shard_of",
]

# Images are processed at most this large (long side, pixels); boxes are scaled back.
EDGEBOXES_MAX_SIDE = 800
SELECTIVE_SEARCH_MAX_SIDE = 500


# ----------------------------------------------------------------------------- shards


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) of a store key: CRC-32 of its UTF-8 bytes modulo ``num_shards``.
    A function of the file name only, so every machine, a rerun and a resumed shard agree."""
    return zlib.crc32(key.encode("utf-8")) % num_shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; a clear ValueError otherwise."""
    try:
        index, total = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must be I/N (e.g. 0/8), got {text!r}") from None
    if not 0 <= index < total:
        raise ValueError(f"shard {text!r}: I must be in 0..N-1")
    return index, total


#: Store metadata that every shard of one image set must share.
SHARED_META = ("method", "max_boxes", "format_version", "image_root", "edges")


def meta_differences(have: dict[str, str], wanted: dict[str, str], names) -> list[tuple[str, str | None, str | None]]:
    """``(name, have's value, wanted's value)`` for each of ``names`` whose values differ (a missing
    entry is None); image roots that are the same folder by real path do not differ."""
    problems = []
    for name in names:
        a, b = have.get(name), wanted.get(name)
        same = a == b or (name == "image_root" and a is not None and b is not None
                          and os.path.realpath(a) == os.path.realpath(b))
        if not same:
            problems.append((name, a, b))
    return problems


def merge_stores(out: str, shards: list[str], *, progress=None) -> dict[str, int]:
    """Copy the entries of the shard stores ``shards`` into the store ``out`` (created if missing).

    Shards must share :data:`SHARED_META` (with ``out`` too, if it has any) and must not hold a key
    twice; when they carry ``shard`` metadata ("I/N", written by ``generate_proposals.py --shard``)
    they must be all N shards of one run, each once. Rows are copied inside SQLite, one transaction
    per shard (:meth:`ProposalStore.append_store`). Returns {shard path: entries copied};
    ``progress(path)`` is called after each shard."""
    if not shards:
        raise ValueError("no shard stores to merge")
    metas = {}
    for path in shards:
        with ProposalStore(path) as store:
            metas[path] = store.meta
    first = metas[shards[0]]
    for path, meta in metas.items():
        diff = [f"{k}: {a!r} vs {b!r}" for k, a, b in meta_differences(meta, first, SHARED_META)]
        if diff:
            raise ValueError(f"{path} was made with other settings than {shards[0]} ({'; '.join(diff)})")
    labels = [meta.get("shard") for meta in metas.values()]
    if any(labels):
        parsed = [parse_shard(label) if label else None for label in labels]
        totals = {p[1] for p in parsed if p}
        indices = sorted(p[0] for p in parsed if p)
        if None in parsed or len(totals) != 1 or indices != list(range(next(iter(totals)))):
            raise ValueError(f"the stores are not all shards of one run, each once: {dict(zip(shards, labels))}")
    target = ProposalStore(out, mode="a")
    copied = {}
    try:
        have = target.meta
        diff = [f"{k}: {a!r} vs {b!r}" for k, a, b in meta_differences(have, first, [k for k in SHARED_META if k in have])]
        if diff:
            raise ValueError(f"{out} was made with other settings than the shards ({'; '.join(diff)})")
        target.update_meta({k: first[k] for k in SHARED_META if k in first})
        for path in shards:
            copied[path] = target.append_store(path)
            if progress is not None:
                progress(path)
        target.record_unreadable({k: e for path in shards
                                  for k, e in json.loads(metas[path].get(UNREADABLE, "{}")).items()})
    finally:
        target.close()
    return copied


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk so that its long side is at most ``max_side``, and the factor."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def enhance_image(image_rgb: np.ndarray) -> np.ndarray:
    """The fallback input: sharpened (unsharp mask), contrast x1.5 around the mean, 2x upscaled."""
    img = image_rgb.astype(np.float32)
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    sharp = img + 1.0 * (img - blurred)
    mean = sharp.reshape(-1, sharp.shape[-1]).mean(axis=0)
    contrast = (sharp - mean) * 1.5 + mean
    out = np.clip(contrast + 0.5, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    return cv2.resize(out, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)


# ----------------------------------------------------------------------------- edge boxes

# Gradient edge map: light blur, Sobel derivatives per colour channel.
_BLUR_SIGMA = 1.0
_ORIENT_SIGMA = 2.0
# Gradient magnitudes (per pixel, image in [0, 1]) are normalised by a high quantile, but
# never by less than _NORM_FLOOR, and those under _NOISE_FLOOR are dropped, so that flat or
# noise-only images give no edges (and so no boxes: the fallbacks take over).
_NORM_QUANTILE = 99.0
_NORM_FLOOR = 0.08
_NOISE_FLOOR = 0.01
# EdgeBoxes' minimum box area as a fraction of the image area (OpenCV's default, 1000 px,
# is tuned for ~500x400 images).
_MIN_BOX_AREA_FRACTION = 0.003
_MIN_BOX_AREA_PX = 64


def edge_map(image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient edge map in [0, 1] and orientation map in [0, pi), both float32 ``H x W``.

    Magnitude: the largest per-channel Sobel gradient of the lightly blurred image,
    normalised by a high quantile. Orientation: the edge normal (gradient direction, the
    convention of OpenCV's ``computeOrientation`` and of EdgeBoxes' affinities), from the
    Gaussian-smoothed structure tensor so that it varies smoothly along an edge.
    """
    img = image_rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    channels = cv2.split(img) if img.ndim == 3 else [img]
    mag = jxx = jyy = jxy = None
    for channel in channels:  # per channel with OpenCV: numpy reductions over a channel axis are slow
        channel = cv2.GaussianBlur(channel, (0, 0), _BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
        gx = cv2.Sobel(channel, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
        gy = cv2.Sobel(channel, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
        m = cv2.magnitude(gx, gy)
        xx, yy, xy = cv2.multiply(gx, gx), cv2.multiply(gy, gy), cv2.multiply(gx, gy)
        if mag is None:
            mag, jxx, jyy, jxy = m, xx, yy, xy
        else:
            mag = cv2.max(mag, m)
            jxx, jyy, jxy = cv2.add(jxx, xx), cv2.add(jyy, yy), cv2.add(jxy, xy)
    jxx, jyy, jxy = (cv2.GaussianBlur(j, (0, 0), _ORIENT_SIGMA) for j in (jxx, jyy, jxy))
    # phase() gives the angle of (jxx - jyy, 2 jxy) in [0, 2 pi): half of it is the normal in [0, pi)
    orientation = cv2.phase(cv2.subtract(jxx, jyy), cv2.multiply(jxy, 2.0)) * np.float32(0.5)
    orientation[orientation >= np.pi] = 0.0
    mag[mag < _NOISE_FLOOR] = 0.0
    sample = mag[::2, ::2]  # the quantile of a subsample is as good and 4x cheaper
    norm = max(float(np.percentile(sample, _NORM_QUANTILE)), _NORM_FLOOR)
    edges = cv2.min(mag * np.float32(1.0 / norm), 1.0)
    return edges, orientation


def edge_nms(edges: np.ndarray, orientation: np.ndarray, radius: int = 1, multiplier: float = 1.01) -> np.ndarray:
    """Thins an edge map: a pixel is kept only if ``multiplier`` times its value is at least
    the (bilinearly sampled) edge value at distance 1..``radius`` on both sides along its
    normal ``orientation``. The same rule as OpenCV's ``edgesNms`` (without its boundary
    suppression), which cannot be called without a structured-edge model object."""
    h, w = edges.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    cos, sin = np.cos(orientation).astype(np.float32), np.sin(orientation).astype(np.float32)
    keep = np.ones((h, w), dtype=bool)
    scaled = edges * np.float32(multiplier)
    for d in range(1, radius + 1):
        for sign in (1.0, -1.0):
            neighbour = cv2.remap(edges, xs + sign * d * cos, ys + sign * d * sin, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            keep &= scaled >= neighbour
    return np.where(keep, edges, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _sed_detector(model_path: str):
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"structured-edge model {model_path!r} not found")
    return cv2.ximgproc.createStructuredEdgeDetection(model_path)


def _xywh_to_xyxy(rects, scores, scale: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV (x, y, w, h) rects in a copy scaled by ``scale`` -> xyxy boxes in the image of
    ``height`` x ``width`` (clipped to it, degenerate ones dropped)."""
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / np.float32(scale)
    return _clip_boxes(boxes, scores, height, width)


def _sort_boxes(boxes: np.ndarray, scores: np.ndarray, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")[:max_boxes]
    return (np.ascontiguousarray(boxes[order], dtype=np.float32).reshape(-1, 4),
            np.ascontiguousarray(scores[order], dtype=np.float32))


def _no_boxes() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def _working_copy(image_rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(RGB uint8 image, copy at most ``max_side`` long, its scale) for a proposal method."""
    image_rgb = _as_rgb(image_rgb)
    work, scale = _downscale(image_rgb, max_side)
    return image_rgb, work, scale


def edge_boxes(image_rgb: np.ndarray, max_boxes: int = 512, sed_model: str | None = None,
               max_side: int | None = EDGEBOXES_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """EdgeBoxes proposals: ``(K, 4)`` float32 xyxy boxes in ``image_rgb`` pixels (clipped
    to the image, positive width and height) and ``(K,)`` float32 scores, descending,
    ``K <= max_boxes`` (may be 0).

    The image is processed at most ``max_side`` pixels long (boxes scaled back). Edges come
    from the structured-edge model ``sed_model`` if given, else from :func:`edge_map` and
    :func:`edge_nms`.
    """
    image_rgb, work, scale = _working_copy(image_rgb, max_side)
    height, width = image_rgb.shape[:2]
    h, w = work.shape[:2]
    if min(h, w) < 8:
        return _no_boxes()
    if sed_model:
        sed = _sed_detector(os.path.abspath(sed_model))
        raw = sed.detectEdges(work.astype(np.float32) * (1.0 / 255.0))
        orientation = sed.computeOrientation(raw)
        edges = sed.edgesNms(raw, orientation, r=2, s=0, m=1.0, isParallel=True)
    else:
        edges, orientation = edge_map(work)
        edges = edge_nms(edges, orientation)
    eb = cv2.ximgproc.createEdgeBoxes()
    eb.setMaxBoxes(int(max_boxes))
    eb.setMinBoxArea(float(max(_MIN_BOX_AREA_PX, _MIN_BOX_AREA_FRACTION * h * w)))
    result = eb.getBoundingBoxes(edges, orientation)
    rects, scores = result if isinstance(result, tuple) else (result, None)
    if rects is None or len(rects) == 0:
        return _no_boxes()
    if scores is None or len(scores) != len(rects):  # older OpenCV: boxes in score order, no scores
        scores = 1.0 - np.arange(len(rects), dtype=np.float32) / len(rects)
    boxes, scores = _xywh_to_xyxy(rects, scores, scale, height, width)
    return _sort_boxes(boxes, scores, max_boxes)


def selective_search(image_rgb: np.ndarray, max_boxes: int = 512,
                     max_side: int | None = SELECTIVE_SEARCH_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Selective search (OpenCV ximgproc, fast mode) on a copy at most ``max_side`` pixels
    long. Boxes as in :func:`edge_boxes`; score = ``1 - rank / K`` in the output order."""
    image_rgb, work, scale = _working_copy(image_rgb, max_side)
    height, width = image_rgb.shape[:2]
    h, w = work.shape[:2]
    if min(h, w) < 8:
        return _no_boxes()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(work[:, :, ::-1]))
    ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4)
    if len(rects) == 0:
        return _no_boxes()
    # drop exact duplicates, keeping the first (best-ranked) occurrence
    _, first = np.unique(rects, axis=0, return_index=True)
    rects = rects[np.sort(first)][:max_boxes]
    # a region covering the whole (flat) image is not a proposal: let the fallbacks decide
    rects = rects[~((rects[:, 2] >= w) & (rects[:, 3] >= h))]
    if len(rects) == 0:
        return _no_boxes()
    scores = 1.0 - np.arange(len(rects), dtype=np.float32) / len(rects)
    boxes, scores = _xywh_to_xyxy(rects, scores, scale, height, width)
    return _sort_boxes(boxes, scores, max_boxes)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _clip_boxes(boxes: np.ndarray, scores: np.ndarray, height: int, width: int,
                min_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    boxes = boxes.astype(np.float32, copy=True)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return boxes[ok], scores[ok]


def _run_method(image_rgb: np.ndarray, method: str, max_boxes: int, sed_model: str | None):
    if method == "edgeboxes":
        return edge_boxes(image_rgb, max_boxes=max_boxes, sed_model=sed_model, max_side=None)
    if method == "selective_search":
        return selective_search(image_rgb, max_boxes=max_boxes, max_side=None)
    raise ValueError(f"unknown proposal method {method!r} (expected one of {METHODS})")


def compute_proposals(image_rgb: np.ndarray, method: str = "edgeboxes", max_boxes: int = 512,
                      sed_model: str | None = None, max_side: int | None = None) -> Proposals:
    """One image's proposals with the spec's fallbacks, boxes in ``image_rgb`` pixels.

    The image is processed at most ``max_side`` pixels long (default: the method's, see
    :data:`EDGEBOXES_MAX_SIDE`). If the method finds nothing it is retried on
    :func:`enhance_image` of the image (``fallback="enhanced"``); if that finds nothing
    either the result is the centre box ``[w/4, h/4, 3w/4, 3h/4]`` with score 1
    (``fallback="centre_box"``). Boxes are clipped to the image; boxes under one pixel wide
    or high are dropped.
    """
    if method not in METHODS:
        raise ValueError(f"unknown proposal method {method!r} (expected one of {METHODS})")
    if max_boxes < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")
    image_rgb = _as_rgb(image_rgb)
    height, width = image_rgb.shape[:2]
    if max_side is None:
        max_side = EDGEBOXES_MAX_SIDE if method == "edgeboxes" else SELECTIVE_SEARCH_MAX_SIDE
    work, scale = _downscale(image_rgb, max_side)

    boxes, scores = _run_method(work, method, max_boxes, sed_model)
    boxes, scores = _clip_boxes(boxes / np.float32(scale), scores, height, width)
    fallback = ""
    if len(boxes) == 0:
        fallback = "enhanced"
        boxes, scores = _run_method(enhance_image(work), method, max_boxes, sed_model)
        boxes, scores = _clip_boxes(boxes / np.float32(2.0 * scale), scores, height, width)
    if len(boxes) == 0:
        fallback = "centre_box"
        boxes = np.array([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]], dtype=np.float32)
        scores = np.ones((1,), dtype=np.float32)
    boxes, scores = _sort_boxes(boxes, scores, max_boxes)
    return Proposals(boxes=boxes, scores=scores, height=int(height), width=int(width), fallback=fallback)


def proposals_for_file(path: str, method: str = "edgeboxes", max_boxes: int = 512,
                       sed_model: str | None = None) -> Proposals:
    """Reads ``path`` (:func:`disco_detr.data.image_io.read_rgb_image`) and computes its proposals."""
    return compute_proposals(read_image_rgb(path), method=method, max_boxes=max_boxes, sed_model=sed_model)
