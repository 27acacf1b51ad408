"""A small synthetic multi-class detection dataset for demos and smoke tests.

The generator draws 1 to 8 textured, coloured shapes (the classes
:data:`~disco_detr.data.datasets.DEMO_CLASSES`) on a textured, muted background. It is
deterministic: the same parameters and seed give byte-identical files. Everything is produced
offline in a few seconds.

Coordinate conventions used throughout this module:

* pixel ``(row i, column j)`` covers the square ``[j, j + 1) x [i, i + 1)``; its centre is
  ``(j + 0.5, i + 0.5)``;
* ``bbox_xyxy`` is ``(x0, y0, x1, y1)`` in float pixels with exclusive right/bottom edges,
  so a box that covers columns ``j0..j1`` (inclusive) has ``x0 = j0`` and ``x1 = j1 + 1``;
* COCO boxes are ``[x, y, w, h]`` with ``x = x0, y = y0, w = x1 - x0, h = y1 - y0``;
* PASCAL VOC boxes are 1-based and inclusive: ``xmin = x0 + 1, ymin = y0 + 1,
  xmax = x1, ymax = y1`` (integers). Detectron2's VOC loader subtracts 1 from
  ``xmin``/``ymin`` only, which gives back exactly ``(x0, y0, x1, y1)``.

Output layout of :func:`generate_demo_dataset` (``root`` is the output folder)::

    root/images/{train,val,unlabelled}/000000.jpg ...
    root/annotations/instances_{train,val}.json        COCO detection format
    root/VOC/JPEGImages/{train,val}_000000.jpg ...     the labelled images again
    root/VOC/Annotations/{train,val}_000000.xml ...
    root/VOC/ImageSets/Main/{train,val}.txt
    root/demo_params.json                              written last; used to skip work
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..data.datasets import DEMO_CLASSES

__all__ = [
    "ObjectSpec",
    "generate_demo_dataset",
    "paint_object",
    "render_image",
    "sample_object_spec",
]

#: Bump when the rendering changes, so that existing outputs are regenerated.
GENERATOR_VERSION = 1

MAX_OBJECTS = 8
#: An annotation is dropped when less than this fraction of its shape is visible.
MIN_VISIBLE_FRACTION = 0.5
#: Placement is stricter than the drop rule so that annotations are rarely dropped.
_PLACE_VISIBLE_FRACTION = 0.6
_PLACE_ATTEMPTS = 20
#: Object size (diameter of the shape's circumcircle) as a fraction of the image side.
_SIZE_RANGE = (0.1, 0.4)
_MIN_SIZE_PX = 6.0
_JPEG_QUALITY = 95
_SPLIT_CODES = {"train": 0, "val": 1, "unlabelled": 2}

# Per class: base hue (degrees) and texture name.
_CLASS_STYLE = (
    (0.0, "shaded"),  # circle: red, brighter in the middle
    (120.0, "stripes"),  # square: green
    (220.0, "dots"),  # triangle: blue
    (52.0, "checker"),  # cross: yellow
    (285.0, "flat"),  # ring: purple, hollow
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object to draw.

    ``center_x``/``center_y`` are in pixels (see the module docstring), ``size`` is the
    diameter in pixels of the circle that contains the shape at any rotation, ``angle``
    is in radians and ``color`` is the RGB base colour (0..255).
    """

    category_id: int
    center_x: float
    center_y: float
    size: float
    angle: float
    color: tuple[int, int, int]


@dataclass
class _Raster:
    mask: np.ndarray  # bool patch, True inside the shape
    x0: int  # image column of the patch's first column (may be negative)
    y0: int
    u: np.ndarray  # pixel-centre coordinates in the object's rotated frame
    v: np.ndarray


def _hsv_rgb(hue_deg: float, sat: float, val: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb((hue_deg / 360.0) % 1.0, sat, val)
    return np.array(rgb, dtype=np.float32) * 255.0


def sample_object_spec(rng: np.random.Generator, image_size: int) -> ObjectSpec:
    """Draws a random object (class, size, position, rotation, jittered colour)."""
    category_id = int(rng.integers(len(DEMO_CLASSES)))
    lo, hi = _SIZE_RANGE
    size = max(_MIN_SIZE_PX, image_size * math.exp(rng.uniform(math.log(lo), math.log(hi))))
    center_x = float(rng.uniform(0.0, image_size))
    center_y = float(rng.uniform(0.0, image_size))
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    base_hue = _CLASS_STYLE[category_id][0]
    hue = base_hue + float(np.clip(rng.normal(0.0, 10.0), -25.0, 25.0))
    color = _hsv_rgb(hue, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.7, 1.0)))
    return ObjectSpec(
        category_id=category_id,
        center_x=center_x,
        center_y=center_y,
        size=float(size),
        angle=angle,
        color=tuple(int(c) for c in np.rint(color)),
    )


def _rasterize(spec: ObjectSpec) -> _Raster:
    """Binary mask of the full shape (not clipped to any image) on a local patch."""
    r = spec.size / 2.0
    x0 = math.floor(spec.center_x - r) - 1
    y0 = math.floor(spec.center_y - r) - 1
    x1 = math.ceil(spec.center_x + r) + 1
    y1 = math.ceil(spec.center_y + r) + 1
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - spec.center_x)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - spec.center_y)[:, None]
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    name = DEMO_CLASSES[spec.category_id]
    if name == "circle":
        mask = u * u + v * v <= r * r
    elif name == "ring":
        rho2 = u * u + v * v
        mask = (rho2 <= r * r) & (rho2 >= (0.6 * r) ** 2)
    elif name == "square":
        half = r / math.sqrt(2.0)
        mask = (np.abs(u) <= half) & (np.abs(v) <= half)
    elif name == "triangle":
        # Equilateral triangle with circumradius r: three half-planes at distance r / 2.
        mask = np.ones(u.shape, dtype=bool)
        for deg in (270.0, 30.0, 150.0):
            t = math.radians(deg)
            mask &= math.cos(t) * u + math.sin(t) * v <= r / 2.0
    elif name == "cross":
        arm, length = 0.3 * r, 0.95 * r
        au, av = np.abs(u), np.abs(v)
        mask = ((au <= length) & (av <= arm)) | ((au <= arm) & (av <= length))
    else:  # pragma: no cover - DEMO_CLASSES and this function must agree
        raise ValueError(f"unknown class {name!r}")
    return _Raster(mask=mask, x0=x0, y0=y0, u=u, v=v)


def _full_box(raster: _Raster) -> tuple[int, int, int, int] | None:
    """Tight xyxy box (exclusive right/bottom) of the full shape, in image pixels."""
    cols = np.flatnonzero(raster.mask.any(axis=0))
    rows = np.flatnonzero(raster.mask.any(axis=1))
    if cols.size == 0:
        return None
    return (
        raster.x0 + int(cols[0]),
        raster.y0 + int(rows[0]),
        raster.x0 + int(cols[-1]) + 1,
        raster.y0 + int(rows[-1]) + 1,
    )


def _clip_box(box, width: int, height: int) -> tuple[float, float, float, float] | None:
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[2], width), min(box[3], height)
    if x1 <= x0 or y1 <= y0:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def _patch_window(raster: _Raster, width: int, height: int):
    """Slices of the image and of the patch where they overlap (None if they don't)."""
    ph, pw = raster.mask.shape
    ix0, iy0 = max(raster.x0, 0), max(raster.y0, 0)
    ix1, iy1 = min(raster.x0 + pw, width), min(raster.y0 + ph, height)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    img_sl = (slice(iy0, iy1), slice(ix0, ix1))
    patch_sl = (slice(iy0 - raster.y0, iy1 - raster.y0), slice(ix0 - raster.x0, ix1 - raster.x0))
    return img_sl, patch_sl


def _texture(raster: _Raster, spec: ObjectSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB colours of the patch (only meaningful where ``raster.mask`` is True)."""
    texture = _CLASS_STYLE[spec.category_id][1]
    u, v = raster.u, raster.v
    period = max(3.0, spec.size / 6.0)
    if texture == "stripes":
        mod = np.where(np.floor(u / period) % 2 == 0, 1.0, 0.6)
    elif texture == "checker":
        mod = np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, 0.6)
    elif texture == "dots":
        du = np.mod(u, period) - period / 2.0
        dv = np.mod(v, period) - period / 2.0
        mod = np.where(du * du + dv * dv <= (0.3 * period) ** 2, 0.55, 1.0)
    elif texture == "shaded":
        rho2 = (u * u + v * v) / (spec.size / 2.0) ** 2
        mod = 1.0 - 0.35 * np.minimum(rho2, 1.0)
    else:
        mod = np.ones(u.shape, dtype=np.float32)
    color = np.asarray(spec.color, dtype=np.float32)
    rgb = mod.astype(np.float32)[..., None] * color
    rgb += rng.normal(0.0, 4.0, size=rgb.shape).astype(np.float32)
    # Never pure black, so that painted pixels always differ from a black canvas.
    return np.clip(np.rint(rgb), 10, 255).astype(np.uint8)


def _paint(image: np.ndarray, raster: _Raster, spec: ObjectSpec, rng: np.random.Generator):
    window = _patch_window(raster, image.shape[1], image.shape[0])
    if window is None:
        return None
    img_sl, patch_sl = window
    colors = _texture(raster, spec, rng)[patch_sl]
    m = raster.mask[patch_sl]
    image[img_sl][m] = colors[m]
    return window


def paint_object(
    image: np.ndarray, spec: ObjectSpec, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """Paints one object onto ``image`` (HxWx3 uint8 RGB, modified in place).

    Returns ``(mask, bbox_xyxy)``: ``mask`` is an HxW bool array of the painted pixels and
    ``bbox_xyxy`` is the tight box of the object's *full* shape clipped to the image, in
    float pixels with exclusive right/bottom edges (None if the shape misses the image).
    ``rng`` drives the per-pixel colour noise (a fixed seed is used when it is None).
    """
    if rng is None:
        rng = np.random.default_rng(0)
    height, width = image.shape[:2]
    raster = _rasterize(spec)
    mask = np.zeros((height, width), dtype=bool)
    window = _paint(image, raster, spec, rng)
    if window is not None:
        img_sl, patch_sl = window
        mask[img_sl] = raster.mask[patch_sl]
    full = _full_box(raster)
    return mask, (None if full is None else _clip_box(full, width, height))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted, textured background: smooth colour noise + gradient + optional stripes."""
    base = _hsv_rgb(
        float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.35, 0.75))
    )
    k = int(rng.integers(3, 7))
    grid = rng.normal(0.0, 22.0, size=(k, k, 3)).astype(np.float32)
    img = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) + base
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    xs, ys = coords[None, :], coords[:, None]
    t = float(rng.uniform(0.0, 2.0 * math.pi))
    ramp = math.cos(t) * xs + math.sin(t) * ys  # in [-0.71, 0.71]
    other = _hsv_rgb(
        float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.35, 0.75))
    )
    img += ramp[..., None] * (other - base) * float(rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:
        t = float(rng.uniform(0.0, math.pi))
        period = float(rng.uniform(0.04, 0.12))
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        stripes = np.sin(2.0 * math.pi * (math.cos(t) * xs + math.sin(t) * ys) / period + phase)
        img += float(rng.uniform(4.0, 12.0)) * stripes[..., None]
    img += rng.normal(0.0, 3.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_image(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, list[dict]]:
    """Renders one image and its objects.

    Returns ``(image, objects)``: ``image`` is an ``image_size x image_size x 3`` uint8 RGB
    array; ``objects`` (in drawing order, later ones on top) is a list of
    ``{"bbox_xyxy": (x0, y0, x1, y1), "category_id": int}`` with the tight box of the
    object's full shape clipped to the image (float pixels, exclusive right/bottom edges)
    and the 0-based contiguous class id (index into :data:`DEMO_CLASSES`). There are 1 to
    8 objects; each is at least 50% visible (truncation and occlusion both count).
    """
    size = int(image_size)
    image = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int32)  # index of the top object per pixel
    placed: list[tuple[ObjectSpec, _Raster]] = []
    areas: list[int] = []
    visible: list[int] = []

    def try_place(spec: ObjectSpec) -> bool:
        raster = _rasterize(spec)
        area = int(raster.mask.sum())
        window = _patch_window(raster, size, size)
        if area == 0 or window is None:
            return False
        img_sl, patch_sl = window
        m = raster.mask[patch_sl]
        in_image = int(m.sum())
        if in_image < _PLACE_VISIBLE_FRACTION * area:
            return False
        region = owner[img_sl]
        if placed:
            lost = np.bincount(region[m] + 1, minlength=len(placed) + 1)[1:]
            left = np.asarray(visible) - lost
            if np.any(left < _PLACE_VISIBLE_FRACTION * np.asarray(areas)):
                return False
            visible[:] = left.tolist()
        region[m] = len(placed)
        placed.append((spec, raster))
        areas.append(area)
        visible.append(in_image)
        _paint(image, raster, spec, rng)
        return True

    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(_PLACE_ATTEMPTS):
            if try_place(sample_object_spec(rng, size)):
                break
    if not placed:  # practically never: fall back to one centred object
        spec = sample_object_spec(rng, size)
        spec = ObjectSpec(spec.category_id, size / 2, size / 2, spec.size, spec.angle, spec.color)
        if not try_place(spec):  # pragma: no cover - a centred object always fits
            raise RuntimeError("could not place any object")

    objects = []
    for (spec, raster), area, vis in zip(placed, areas, visible):
        if vis < MIN_VISIBLE_FRACTION * area:
            continue
        box = _clip_box(_full_box(raster), size, size)
        if box is None:
            continue
        objects.append({"bbox_xyxy": box, "category_id": spec.category_id})
    return image, objects


def _encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=_JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _voc_xml(stem: str, size: int, objects: list[dict]) -> str:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC"
    ET.SubElement(ann, "filename").text = f"{stem}.jpg"
    src = ET.SubElement(ann, "source")
    ET.SubElement(src, "database").text = "DisCo DETR synthetic demo"
    sz = ET.SubElement(ann, "size")
    for tag, val in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(val)
    ET.SubElement(ann, "segmented").text = "0"
    for obj in objects:
        x0, y0, x1, y1 = (round(c) for c in obj["bbox_xyxy"])
        node = ET.SubElement(ann, "object")
        ET.SubElement(node, "name").text = DEMO_CLASSES[obj["category_id"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(obj.get("truncated", False)))
        ET.SubElement(node, "difficult").text = "0"
        bnd = ET.SubElement(node, "bndbox")
        for tag, val in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bnd, tag).text = str(val)
    ET.indent(ann, space="  ")
    return ET.tostring(ann, encoding="unicode") + "\n"


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _paths(root: str) -> dict:
    return {
        "root": root,
        "train_json": os.path.join(root, "annotations", "instances_train.json"),
        "val_json": os.path.join(root, "annotations", "instances_val.json"),
        "train_images": os.path.join(root, "images", "train"),
        "val_images": os.path.join(root, "images", "val"),
        "unlabelled_images": os.path.join(root, "images", "unlabelled"),
        "voc_root": os.path.join(root, "VOC"),
    }


def _file_name(index: int, total: int) -> str:
    return f"{index:0{max(6, len(str(total)))}d}.jpg"


def _is_complete(root: str, params: dict, counts: dict) -> bool:
    try:
        with open(os.path.join(root, "demo_params.json"), encoding="utf-8") as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    paths = _paths(root)
    if not (os.path.isfile(paths["train_json"]) and os.path.isfile(paths["val_json"])):
        return False
    for split, n in counts.items():
        folder = paths[f"{split}_images"]
        if not os.path.isdir(folder) or len(os.listdir(folder)) != n:
            return False
    return True


def generate_demo_dataset(
    root: str,
    *,
    num_train: int = 600,
    num_val: int = 100,
    num_unlabelled: int = 300,
    image_size: int = 160,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Writes the demo dataset under ``root`` (layout in the module docstring).

    If ``root/demo_params.json`` records the same parameters and the outputs are present,
    nothing is written (``generated`` is False) unless ``force`` is True. Otherwise the
    folders ``images``, ``annotations`` and ``VOC`` and the params file under ``root`` are
    removed and rewritten. Image ``i`` of a split depends only on ``(seed, split, i)``.

    COCO boxes are ``[x, y, w, h]`` floats (see the module docstring) and ``area`` is the
    box area; category ids start at 1 in :data:`DEMO_CLASSES` order. Returns a dict with the keys ``root``,
    ``train_json``, ``val_json``, ``train_images``, ``val_images``, ``unlabelled_images``,
    ``voc_root`` (paths as str) and ``generated`` (bool).
    """
    counts = {"train": int(num_train), "val": int(num_val), "unlabelled": int(num_unlabelled)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"image counts must be >= 0, got {counts}")
    if int(image_size) < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    size, seed = int(image_size), int(seed)
    root = os.fspath(root)
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_train": counts["train"],
        "num_val": counts["val"],
        "num_unlabelled": counts["unlabelled"],
        "image_size": size,
        "seed": seed,
        "classes": list(DEMO_CLASSES),
    }
    paths = _paths(root)
    if not force and _is_complete(root, params, counts):
        return {**paths, "generated": False}

    params_file = os.path.join(root, "demo_params.json")
    if os.path.exists(params_file):
        os.remove(params_file)
    for sub in ("images", "annotations", "VOC"):
        shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    voc = paths["voc_root"]
    for folder in (
        paths["train_images"],
        paths["val_images"],
        paths["unlabelled_images"],
        os.path.dirname(paths["train_json"]),
        os.path.join(voc, "JPEGImages"),
        os.path.join(voc, "Annotations"),
        os.path.join(voc, "ImageSets", "Main"),
    ):
        os.makedirs(folder, exist_ok=True)

    from tqdm import tqdm

    total = sum(counts.values())
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(DEMO_CLASSES)]
    with tqdm(total=total, desc="demo data", unit="img", disable=total <= 50) as bar:
        for split, n in counts.items():
            labelled = split != "unlabelled"
            images, annotations, stems = [], [], []
            for i in range(n):
                rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
                image, objects = render_image(rng, size)
                name = _file_name(i, n)
                data = _encode_jpeg(image)
                with open(os.path.join(paths[f"{split}_images"], name), "wb") as f:
                    f.write(data)
                bar.update(1)
                if not labelled:
                    continue
                image_id = i + 1
                images.append({"id": image_id, "file_name": name, "width": size, "height": size})
                for obj in objects:
                    x0, y0, x1, y1 = obj["bbox_xyxy"]
                    obj["truncated"] = x0 <= 0 or y0 <= 0 or x1 >= size or y1 >= size
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": obj["category_id"] + 1,
                            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            "area": float((x1 - x0) * (y1 - y0)),
                            "iscrowd": 0,
                        }
                    )
                stem = f"{split}_{os.path.splitext(name)[0]}"
                stems.append(stem)
                with open(os.path.join(voc, "JPEGImages", stem + ".jpg"), "wb") as f:
                    f.write(data)
                with open(os.path.join(voc, "Annotations", stem + ".xml"), "w") as f:
                    f.write(_voc_xml(stem, size, objects))
            if labelled:
                coco = {
                    "info": {
                        "description": f"DisCo DETR synthetic demo dataset ({split} split)",
                        "version": str(GENERATOR_VERSION),
                        "seed": seed,
                    },
                    "licenses": [],
                    "images": images,
                    "annotations": annotations,
                    "categories": categories,
                }
                _write_json(paths[f"{split}_json"], coco)
                with open(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "w") as f:
                    f.write("".join(s + "\n" for s in stems))
    _write_json(params_file, params)
    return {**paths, "generated": True}
