"""One tolerant PASCAL VOC reader, shared by every VOC path of the project.

Dataset loading (training and evaluation) and both evaluators of the VOC config read VOC
annotations through :func:`read_voc_annotation` only, so a file that loads also evaluates.

What the reader accepts (files written by the VOC devkit, labelme, CVAT, LabelImg, ...):

* ``<difficult/>``, ``<truncated/>`` empty or missing: 0. Flags may be ``0``/``1``,
  ``0.0``/``1.0`` or ``true``/``false`` (any case).
* float coordinates (``<xmin>12.5</xmin>``) are kept as floats, never rounded.
* ``<pose>`` missing: ``"Unspecified"``; unknown extra tags (CVAT's ``<occluded>``,
  ``<attributes>``, LabelImg's ``<path>``) are ignored.
* ``<size>`` missing, empty or zero: width and height are read from the image file (the
  size after EXIF orientation, as :func:`detectron2.data.detection_utils.read_image` sees it).

What it refuses, with :class:`VOCFormatError` naming the file: text that is not XML, a root
other than ``<annotation>``, an ``<object>`` without ``<name>`` or ``<bndbox>``, a missing
or non-numeric coordinate, a flag that is neither 0/1 nor true/false, a non-numeric size, a
missing size when no image file is found.

Coordinate convention. VOC boxes are 1-based and inclusive: ``xmin = 1, xmax = W`` covers
a whole image of width W. :class:`VOCObject` keeps the numbers exactly as written in the
file. detectron2's dataset dicts use 0-based continuous ``XYXY_ABS`` pixels (a box
``[x0, x1)`` covers ``x1 - x0`` pixels); the mapping, the same as detectron2's own
``load_voc_instances``, subtracts 1 from ``xmin`` and ``ymin`` only::

    XYXY_ABS = (xmin - 1, ymin - 1, xmax, ymax)          (voc_box_to_xyxy)
    VOC      = (x0 + 1,   y0 + 1,   x1,   y1)            (xyxy_to_voc_box, the inverse)

so integer VOC boxes (xmin=1, xmax=W) become (0, W), and float boxes move by exactly 1 on
their min side. The VOC AP evaluator converts predictions back with the inverse and scores
them in VOC coordinates, as the devkit does.

Folder layouts (:func:`voc_layout`):

* standard: ``<dir>/Annotations/<id>.xml``, images in ``<dir>/JPEGImages``, the split list
  ``<dir>/ImageSets/Main/<split>.txt`` (one id per line; blank lines, CRLF and trailing
  columns are tolerated; an id listed twice is refused);
* flat (LabelImg saves each ``.xml`` beside its image): ``<dir>`` has no ``Annotations``
  sub-folder; annotations and images are both read from ``<dir>``;
* ``split=None``: every ``*.xml`` of the annotation folder, sorted by name (for tool
  exports without an ``ImageSets`` list).

The image of annotation ``<id>`` is the first that exists of: ``<images>/<id>.jpg``
(detectron2's convention), ``<images>/<basename of <filename>>``, ``<images>/<id>.<ext>``
for ``ext`` in :data:`disco_detr.data.image_io.IMAGE_EXTENSIONS`, lower case then upper case.
When none exists the record still points at
``<images>/<id>.jpg`` and the image check of the evaluation set (or the training mapper)
reports it by name.
"""
from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from .image_io import IMAGE_EXTENSIONS

__all__ = [
    "UnreadableAnnotationsError",
    "VOCAnnotation",
    "VOCFormatError",
    "VOCLayout",
    "VOCObject",
    "find_voc_image",
    "image_size",
    "list_voc_ids",
    "load_voc_dicts",
    "read_voc_annotation",
    "read_voc_split",
    "voc_box_to_xyxy",
    "voc_layout",
    "xyxy_to_voc_box",
]

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_UPPER_EXTENSIONS = tuple(ext.upper() for ext in IMAGE_EXTENSIONS)  # case-sensitive file systems
_PROGRESS_MIN_FILES = 2000  # show a progress bar when reading at least this many files


class VOCFormatError(ValueError):
    """An annotation file that cannot be read; the message starts with the file name."""


class UnreadableAnnotationsError(ValueError):
    """Some annotation files of a split could not be read.

    ``errors``: list of ``(file, message)``; ``records``: the dataset dicts of the files that
    could be read (training may go on without the others, evaluation may not).
    """

    def __init__(self, what: str, errors: list[tuple[str, str]], records: list[dict]):
        self.errors, self.records = errors, records
        shown = "\n  ".join(message for _, message in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        super().__init__(f"{what}: {len(errors)} annotation file(s) cannot be read:\n  {shown}{more}")


@dataclass(frozen=True)
class VOCObject:
    """One ``<object>``: ``box`` is (xmin, ymin, xmax, ymax) exactly as written in the file
    (VOC 1-based inclusive pixels, floats kept)."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool = False
    pose: str = "Unspecified"


@dataclass(frozen=True)
class VOCAnnotation:
    """One annotation file: the image it describes (path, size in pixels) and its objects."""

    annotation_file: str
    image_file: str
    width: int
    height: int
    objects: tuple[VOCObject, ...]


@dataclass(frozen=True)
class VOCLayout:
    """Where a VOC folder keeps annotations and images, and its split list (None: all xml)."""

    annotation_dir: str
    image_dir: str
    split_file: str | None


def voc_box_to_xyxy(box) -> list[float]:
    """VOC (xmin, ymin, xmax, ymax), 1-based inclusive -> detectron2 XYXY_ABS, 0-based:
    ``(xmin - 1, ymin - 1, xmax, ymax)`` (detectron2's ``load_voc_instances`` convention)."""
    xmin, ymin, xmax, ymax = (float(c) for c in box)
    return [xmin - 1.0, ymin - 1.0, xmax, ymax]


def xyxy_to_voc_box(boxes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`voc_box_to_xyxy` for an (N, 4) array of XYXY_ABS boxes: (N, 4) VOC
    boxes ``(x0 + 1, y0 + 1, x1, y1)``, float64."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, :2] += 1.0
    return out


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file after EXIF orientation, reading only its header.

    Raises ``OSError`` naming the file when it is missing or not an image.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # broken EXIF blocks: detectron2's reader ignores them too
                orientation = None
    except Exception as e:
        raise OSError(f"Cannot read image {path!r}: {e}") from e
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees: read_image swaps the sides
        width, height = height, width
    return width, height


def voc_layout(dirname: str, split: str | None) -> VOCLayout:
    """The layout of a VOC folder (see the module docstring).

    Raises ``FileNotFoundError`` naming the folder or the split list that does not exist.
    """
    if not os.path.isdir(dirname):
        raise FileNotFoundError(f"VOC folder {dirname!r} does not exist")
    annotation_dir = os.path.join(dirname, "Annotations")
    if os.path.isdir(annotation_dir):
        image_dir = os.path.join(dirname, "JPEGImages")
    else:  # flat: LabelImg-style xml files beside their images
        annotation_dir = image_dir = dirname
    split_file = None
    if split:
        split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(
                f"VOC split list {split_file!r} does not exist (register the folder with split=None "
                f"to use every .xml file of {annotation_dir!r})"
            )
    return VOCLayout(annotation_dir, image_dir, split_file)


def list_voc_ids(layout: VOCLayout) -> list[str]:
    """The image ids of a split, in file order; every ``.xml`` stem (sorted) without a list."""
    if layout.split_file is None:
        return sorted(f[:-4] for f in os.listdir(layout.annotation_dir) if f.lower().endswith(".xml"))
    ids, first_line = [], {}
    with open(layout.split_file, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            image_id = fields[0]
            if image_id in first_line:
                raise ValueError(f"{layout.split_file}: id {image_id!r} is listed twice (lines "
                                 f"{first_line[image_id]} and {line_no})")
            first_line[image_id] = line_no
            ids.append(image_id)
    return ids


def find_voc_image(image_dir: str, image_id: str, filename: str | None = None) -> str | None:
    """The image file of ``image_id`` (search order in the module docstring), or None."""
    candidates = [os.path.join(image_dir, image_id + ".jpg")]
    if filename:
        candidates.append(os.path.join(image_dir, os.path.basename(filename.replace("\\", "/"))))
    candidates += [os.path.join(image_dir, image_id + ext) for ext in (*IMAGE_EXTENSIONS, *_UPPER_EXTENSIONS)]
    return next((c for c in candidates if os.path.isfile(c)), None)


def _text(node: ET.Element | None, tag: str) -> str:
    """Stripped text of ``node/tag``; "" when the tag is missing or empty."""
    if node is None:
        return ""
    child = node.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _flag(node: ET.Element, tag: str, xml_file: str, where: str) -> bool:
    text = _text(node, tag).lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value in (0.0, 1.0):
        return bool(value)
    raise VOCFormatError(f"{xml_file}: {where}: <{tag}> is {text!r}, expected 0, 1, true, false or empty")


def _number(node: ET.Element | None, tag: str, xml_file: str, where: str) -> float:
    text = _text(node, tag)
    if not text:
        raise VOCFormatError(f"{xml_file}: {where}: <{tag}> is missing or empty")
    try:
        value = float(text)
    except ValueError:
        raise VOCFormatError(f"{xml_file}: {where}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise VOCFormatError(f"{xml_file}: {where}: <{tag}> is {text!r}, not a finite number")
    return value


def read_voc_annotation(xml_file: str, image_dir: str | None = None, image_id: str | None = None) -> VOCAnnotation:
    """Read one VOC annotation file tolerantly (rules in the module docstring).

    ``image_dir`` (default: the annotation's folder) and ``image_id`` (default: the file's
    stem) locate the image, which is opened only when ``<size>`` is missing.
    Raises :class:`VOCFormatError` naming ``xml_file`` when the file cannot be read.
    """
    image_dir = image_dir if image_dir is not None else os.path.dirname(xml_file)
    image_id = image_id if image_id is not None else os.path.splitext(os.path.basename(xml_file))[0]
    try:
        root = ET.parse(xml_file).getroot()
    except FileNotFoundError:
        raise VOCFormatError(f"{xml_file}: annotation file does not exist") from None
    except (ET.ParseError, OSError, UnicodeDecodeError) as e:
        raise VOCFormatError(f"{xml_file}: not a readable XML file ({e})") from None
    if root.tag != "annotation":
        raise VOCFormatError(f"{xml_file}: the root element is <{root.tag}>, expected <annotation>")

    filename = _text(root, "filename") or None
    image_file = find_voc_image(image_dir, image_id, filename)

    size = root.find("size")
    width = height = 0.0
    if size is not None and _text(size, "width") and _text(size, "height"):
        width, height = (_number(size, tag, xml_file, "<size>") for tag in ("width", "height"))
    if width <= 0 or height <= 0:  # no usable <size>: the image knows
        if image_file is None:
            raise VOCFormatError(f"{xml_file}: no <size> and no image for id {image_id!r} in {image_dir!r}")
        try:
            width, height = image_size(image_file)
        except OSError as e:
            raise VOCFormatError(f"{xml_file}: no <size>, and {e}") from None

    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        where = f"object {k}" + (f" ({name!r})" if name else "")
        if not name:
            raise VOCFormatError(f"{xml_file}: {where}: <name> is missing or empty")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VOCFormatError(f"{xml_file}: {where}: <bndbox> is missing")
        box = tuple(_number(bndbox, tag, xml_file, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(VOCObject(
            name=name, box=box,
            difficult=_flag(obj, "difficult", xml_file, where),
            truncated=_flag(obj, "truncated", xml_file, where),
            pose=_text(obj, "pose") or "Unspecified",
        ))
    return VOCAnnotation(
        annotation_file=xml_file,
        image_file=image_file or os.path.join(image_dir, image_id + ".jpg"),
        width=int(round(width)), height=int(round(height)),
        objects=tuple(objects),
    )


def read_voc_split(dirname: str, split: str | None) -> tuple[list[tuple[str, VOCAnnotation]], list[tuple[str, str]]]:
    """Read every annotation of a split.

    Returns ``(annotations, errors)``: ``(image_id, VOCAnnotation)`` for each readable file,
    in split order, and ``(xml_file, message)`` for each unreadable one. A missing folder or
    split list raises ``FileNotFoundError`` at once.
    """
    layout = voc_layout(dirname, split)
    ids = list_voc_ids(layout)
    annotations, errors = [], []
    for image_id in tqdm(ids, desc=f"VOC annotations ({os.path.basename(os.path.normpath(dirname))})",
                         unit="file", disable=len(ids) < _PROGRESS_MIN_FILES, leave=False):
        xml_file = os.path.join(layout.annotation_dir, image_id + ".xml")
        try:
            annotations.append((image_id, read_voc_annotation(xml_file, layout.image_dir, image_id)))
        except VOCFormatError as e:
            errors.append((xml_file, str(e)))
    return annotations, errors


def load_voc_dicts(dirname: str, split: str | None, class_names) -> list[dict]:
    """detectron2 dataset dicts of a VOC split, read with :func:`read_voc_annotation`.

    Each dict: ``file_name``, ``image_id`` (the id), ``height``, ``width`` and
    ``annotations``: ``bbox`` in ``XYXY_ABS`` (:func:`voc_box_to_xyxy`), ``category_id``
    (index in ``class_names``), ``iscrowd`` 0, ``difficult`` and ``truncated`` (0/1).
    Difficult objects are kept for training and COCO-style AP, as detectron2 does; the VOC
    AP evaluator ignores them, as the devkit does.

    Raises ``ValueError`` listing the class names that are not in ``class_names`` (with a
    file for each: the class list is wrong), and :class:`UnreadableAnnotationsError` (with
    the readable records attached) when some files cannot be read.
    """
    from detectron2.structures import BoxMode

    class_index = {name: i for i, name in enumerate(class_names)}
    annotations, errors = read_voc_split(dirname, split)
    unknown: dict[str, str] = {}
    records = []
    for image_id, ann in annotations:
        instances = []
        for obj in ann.objects:
            if obj.name not in class_index:
                unknown.setdefault(obj.name, ann.annotation_file)
                continue
            instances.append({
                "bbox": voc_box_to_xyxy(obj.box), "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": class_index[obj.name], "iscrowd": 0,
                "difficult": int(obj.difficult), "truncated": int(obj.truncated),
            })
        records.append({"file_name": ann.image_file, "image_id": image_id, "height": ann.height,
                        "width": ann.width, "annotations": instances})
    if unknown:
        listed = ", ".join(f"{name!r} (e.g. in {path})" for name, path in sorted(unknown.items())[:10])
        raise ValueError(f"VOC folder {dirname!r}: class name(s) not in the dataset's class list "
                         f"{list(class_names)}: {listed}. Add them to class_names or fix the files.")
    if errors:
        raise UnreadableAnnotationsError(f"VOC folder {dirname!r} split {split!r}", errors, records)
    return records
