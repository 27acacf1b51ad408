"""Dataset registration, COCO json checks and the loader of dataset dicts.

Builtin detectron2 names work as usual under ``$DETECTRON2_DATASETS`` (default
``./datasets``): ``coco_2017_{train,val}`` use detectron2's own COCO loader; the PASCAL VOC
names (``voc_2007_{trainval,train,val,test}``, ``voc_2012_{trainval,train,val}``) are
re-registered here with the project's tolerant VOC reader (:mod:`disco_detr.data.voc`).

Your own data (see ``datasets/README.md``), registered before the config is loaded (for
example at the top of your config file):

* :func:`register_voc_dataset` ``(name, dirname, split, class_names, year=2012)``: a VOC
  folder written by the devkit or an annotation tool (labelme, CVAT, LabelImg, ...); ``class_names``
  is a list or the path of a names file, one a line (labelme's ``class_names.txt``, read by
  :func:`read_class_names`);
* :func:`register_coco_dataset` ``(name, json_file, image_root)``: a COCO-style json
  exported by an annotation tool, checked entry by entry when it is loaded;
* :func:`disco_detr.data.pretrain_datasets.register_unlabelled_images` ``(name, image_root,
  proposals_file)``: a folder of unlabelled images with its proposals, for pre-training.

docs/own_data.md walks through all of them.

Both also register the folder's label splits (``<name>_10pct_fold0``, ``<name>_5shot_fold2``,
...; :mod:`disco_detr.data.label_splits`), as do ``coco_2017_train``, ``voc_2007_2012_trainval``
(``voc_2007_trainval`` + ``voc_2012_trainval``, registered here) and ``disco_demo_train``.

:func:`load_detection_dicts` (what the configs call) checks that the files exist before
loading; with ``strict=True`` (the test loader) it also opens the header of every image,
so an unreadable file stops evaluation in its first seconds, naming the file.
"""
from __future__ import annotations

import itertools
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations, print_instances_class_histogram
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tqdm import tqdm

from .label_splits import is_label_split, read_json, register_label_splits, save_label_split
from .pretrain_datasets import register_unlabelled_images
from .voc import UnreadableAnnotationsError, image_size, load_voc_dicts, voc_layout

__all__ = [
    "DEMO_CLASSES",
    "DEMO_ROOT_ENV",
    "COCO_SSOD_FRACTIONS",
    "COCOFormatError",
    "check_coco_detection_json",
    "check_dataset_available",
    "check_images",
    "load_coco_detection_json",
    "load_detection_dicts",
    "read_class_names",
    "register_builtin_voc",
    "register_coco_dataset",
    "register_concatenated_dataset",
    "register_demo_datasets",
    "register_voc_dataset",
]

logger = logging.getLogger(__name__)

DEMO_ROOT_ENV = "DISCO_DEMO_ROOT"
#: The demo dataset's class names in contiguous-id order (contiguous id 0 is "circle"; COCO id is
#: index + 1); ``disco_detr.tooling.demo_images`` renders them.
DEMO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
_MAX_LISTED = 10  # problems listed in one error message
#: ``coco_2017_train``'s registered fractions: the semi-supervised detection protocol's 0.5 / 1 / 2 / 5 / 10 %.
COCO_SSOD_FRACTIONS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.10)


class COCOFormatError(ValueError):
    """A COCO json that cannot be used; the message names the file and the entries."""


def _demo_root() -> str:
    return os.environ.get(DEMO_ROOT_ENV, os.path.join("datasets", "demo"))


def _datasets_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _replace(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _listing(problems: list[str]) -> str:
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return "\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more


# --------------------------------------------------------------------------- VOC

#: names in a class-names file that are not object classes: labelme's background and ignore labels
NOT_CLASSES = ("_background_", "__ignore__")


def read_class_names(path: str) -> list[str]:
    """The class names of a names file, one a line, in order (contiguous id 0 first): labelme's
    ``class_names.txt`` (labelme2voc.py) or ``labels.txt``; blank lines and labelme's
    ``_background_`` / ``__ignore__`` are skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file {path!r} does not exist")
    with open(path, encoding="utf-8-sig") as f:
        names = [line.strip() for line in f]
    names = [n for n in names if n and n not in NOT_CLASSES]
    if not names:
        raise ValueError(f"class names file {path!r} names no class")
    return names


def register_voc_dataset(name: str, dirname: str, split: str | None, class_names, year: int = 2012,
                         label_splits: bool = True) -> None:
    """Register a PASCAL VOC folder under ``name`` (re-registering replaces the old entry).

    ``dirname``: a standard VOC folder (``Annotations``, ``JPEGImages``,
    ``ImageSets/Main/<split>.txt``) or a flat folder of images with their ``.xml`` beside
    them; ``split=None`` uses every ``.xml`` file. ``class_names``: the classes in
    contiguous-id order (a name not in this list is an error that names a file with it), or the
    path of a names file, one a line (:func:`read_class_names`: labelme's ``class_names.txt``).
    ``year`` picks the VOC AP flavour of the evaluator: 2007 for the 11-point metric of
    VOC2007 test, 2012 (default) for the area under the precision/recall curve.
    Files are read lazily, when the dataset is loaded; the reader is
    :func:`disco_detr.data.voc.read_voc_annotation`. ``label_splits``: also register its label
    splits (:func:`disco_detr.data.label_splits.register_label_splits`, lazy too).
    """
    if year not in (2007, 2012):
        raise ValueError(f"register_voc_dataset({name!r}): year must be 2007 or 2012, got {year}")
    if isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(os.fspath(class_names))
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"register_voc_dataset({name!r}): class_names has duplicates: {class_names}")
    _replace(name)
    DatasetCatalog.register(name, lambda: load_voc_dicts(dirname, split, class_names))
    MetadataCatalog.get(name).set(thing_classes=list(class_names), dirname=dirname, year=year, split=split,
                                  evaluator_type="pascal_voc")
    if label_splits:
        register_label_splits(name)


def register_builtin_voc(root: str | None = None) -> None:
    """(Re-)register detectron2's builtin VOC names with the tolerant reader, under ``root``
    (default ``$DETECTRON2_DATASETS`` or ``./datasets``): ``voc_<year>_<split>`` reads
    ``<root>/VOC<year>`` with the 20 VOC classes; ``voc_2007_2012_trainval`` is
    ``voc_2007_trainval`` + ``voc_2012_trainval`` (16,551 images), with its label splits."""
    root = root or _datasets_root()
    for year, splits in ((2007, ("trainval", "train", "val", "test")), (2012, ("trainval", "train", "val"))):
        for split in splits:
            register_voc_dataset(f"voc_{year}_{split}", os.path.join(root, f"VOC{year}"), split,
                                 VOC_CLASS_NAMES, year=year, label_splits=False)
    register_concatenated_dataset("voc_2007_2012_trainval", ("voc_2007_trainval", "voc_2012_trainval"))
    register_label_splits("voc_2007_2012_trainval")


def _load_concatenated(parents: tuple[str, ...]) -> list[dict]:
    records, errors = [], []
    for parent in parents:
        try:
            records += DatasetCatalog.get(parent)
        except UnreadableAnnotationsError as e:  # keep the readable records of every part
            records += e.records
            errors += e.errors
    if errors:
        raise UnreadableAnnotationsError(f"datasets {list(parents)}", errors, records)
    return records


def register_concatenated_dataset(name: str, parents) -> None:
    """Register ``name`` as the registered datasets ``parents`` one after the other (lazily);
    its metadata is the first parent's ``thing_classes`` and ``evaluator_type`` plus ``parents``.
    The parents must share their classes (checked when it is loaded) and not their image ids."""
    parents = tuple(parents)
    _replace(name)
    DatasetCatalog.register(name, lambda: _load_concatenated(parents))
    first = MetadataCatalog.get(parents[0])
    MetadataCatalog.get(name).set(parents=parents, **{key: getattr(first, key) for key in
                                                      ("thing_classes", "evaluator_type") if hasattr(first, key)})


# --------------------------------------------------------------------------- COCO json

def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_coco_detection_json(data, json_file: str) -> None:
    """Refuse a COCO detection json that cannot be trained or evaluated correctly.

    Raises :class:`COCOFormatError` naming ``json_file`` and each bad entry (position in
    its list and id) for: a top level without ``images``/``categories`` lists; categories
    without an integer ``id`` or a ``name``, or with a duplicate id; images without ``id`` or
    ``file_name``, with a duplicate id, or with a size that is not a number; annotations
    without ``id``, with a duplicate id, without ``image_id``, with a ``category_id`` not
    in ``categories``, with a ``bbox`` that is not 4 finite numbers or has a negative width
    or height, with ``iscrowd`` not 0/1, or with ``ignore`` set (use ``iscrowd: 1``).
    Everything else is accepted (see :func:`load_coco_detection_json`).
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise COCOFormatError(f"{json_file}: not a COCO detection file (needs 'images' and 'categories' lists)")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise COCOFormatError(f"{json_file}: 'annotations' is not a list")
    problems: list[str] = []
    category_ids: set = set()
    for k, cat in enumerate(data["categories"]):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool):
            problems.append(f"categories[{k}]: 'id' is {cid!r}, not an integer")
        elif cid in category_ids:
            problems.append(f"categories[{k}]: id {cid} is used twice")
        elif not isinstance(cat.get("name"), str) or not cat["name"]:
            problems.append(f"categories[{k}] (id {cid}): no 'name'")
        else:
            category_ids.add(cid)
    if not data["categories"]:
        problems.append("'categories' is empty")
    image_ids: set = set()
    for k, img in enumerate(data["images"]):
        iid = img.get("id") if isinstance(img, dict) else None
        where = f"images[{k}] (id {iid!r})"
        if iid is None or isinstance(iid, (bool, list, dict, float)):
            problems.append(f"images[{k}]: 'id' is {iid!r}, not an integer or string")
            continue
        if iid in image_ids:
            problems.append(f"{where}: id used twice")
        image_ids.add(iid)
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            problems.append(f"{where}: no 'file_name'")
        for side in ("height", "width"):
            if img.get(side) is not None and not _is_number(img[side]):
                problems.append(f"{where}: '{side}' is {img[side]!r}, not a number")
    annotation_ids: set = set()
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            problems.append(f"annotations[{k}]: not an object")
            continue
        aid = ann.get("id")
        where = f"annotations[{k}] (id {aid!r}, image {ann.get('image_id')!r})"
        if aid is None:
            problems.append(f"{where}: no 'id' (pycocotools needs one per annotation)")
        elif aid in annotation_ids:
            problems.append(f"{where}: id used twice")
        else:
            annotation_ids.add(aid)
        if "image_id" not in ann:
            problems.append(f"{where}: no 'image_id'")
        if ann.get("category_id") not in category_ids:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            problems.append(f"{where}: 'bbox' is {bbox!r}, not [x, y, width, height] of 4 finite numbers")
        elif bbox[2] < 0 or bbox[3] < 0:
            problems.append(f"{where}: 'bbox' {bbox} has a negative width or height")
        if ann.get("iscrowd", 0) not in (0, 1):
            problems.append(f"{where}: 'iscrowd' is {ann['iscrowd']!r}, expected 0 or 1")
        if ann.get("ignore", 0):
            problems.append(f"{where}: 'ignore' is set; mark regions to ignore with 'iscrowd': 1")
    if problems:
        raise COCOFormatError(f"{json_file}: {len(problems)} problem(s):{_listing(problems)}")


def load_coco_detection_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Dataset dicts of a COCO-style detection json, after :func:`check_coco_detection_json`.

    Behaves like detectron2's ``load_coco_json`` for boxes:

    * category ids (any integers, not necessarily contiguous) map to contiguous ids
      ``0..C-1`` in increasing id order; with ``dataset_name`` the metadata gets
      ``thing_classes`` (in that order) and ``thing_dataset_id_to_contiguous_id``, which
      ``COCOEvaluator`` uses to map predictions back;
    * ``file_name`` is joined to ``image_root`` (sub-folders kept; Windows ``\\``
      separators become ``/``; an absolute path stays as it is);
    * images without annotations are kept (training drops them with ``filter_empty``);
    * ``iscrowd`` (default 0) is kept: training ignores crowd boxes, COCO AP treats them
      as ignore regions;
    * boxes (``XYWH_ABS`` pixels) partly or wholly outside the image are kept: the training
      mapper clips them to the image (and drops what is left empty); the evaluator uses
      the json as it is;
    * boxes of zero width or height are dropped from the dicts (detectron2's mapper drops
      them after loading) and counted in a warning; the evaluator keeps them, as in the json;
    * a missing ``height``/``width`` (or 0) is read from the image header;
    * annotations of an ``image_id`` that is not in ``images`` are left out with a warning.

    Segmentations are not loaded (this project detects boxes only).
    """
    data = read_json(json_file, "COCO annotation file", COCOFormatError)
    check_coco_detection_json(data, json_file)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name is not None:
        names = [c["name"] for c in categories]
        if len(set(names)) != len(names):
            logger.warning("%s: several categories share a name: %s", json_file, names)
        if [c["id"] for c in categories] != list(range(1, len(categories) + 1)):
            logger.info("%s: category ids %s map to contiguous ids 0..%d", json_file, sorted(id_map),
                        len(categories) - 1)
        MetadataCatalog.get(dataset_name).set(thing_classes=names, thing_dataset_id_to_contiguous_id=id_map)

    per_image: dict = {img["id"]: [] for img in data["images"]}
    orphans, zero_area, outside, crowd = [], [], 0, 0
    for ann in data.get("annotations", []):
        if ann["image_id"] not in per_image:
            orphans.append(ann["id"])
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w == 0 or h == 0:
            zero_area.append(ann["id"])
            continue
        iscrowd = int(ann.get("iscrowd", 0))
        crowd += iscrowd
        per_image[ann["image_id"]].append({"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS,
                                           "category_id": id_map[ann["category_id"]], "iscrowd": iscrowd})

    records, backslash = [], False
    images = data["images"]
    for img in tqdm(images, desc=f"COCO images ({os.path.basename(json_file)})", unit="image",
                    disable=len(images) < 5000, leave=False):
        file_name = img["file_name"]
        if "\\" in file_name:
            file_name, backslash = file_name.replace("\\", "/"), True
        path = os.path.join(image_root, file_name)
        width, height = img.get("width"), img.get("height")
        if not width or not height:
            try:
                width, height = image_size(path)
            except OSError as e:
                raise COCOFormatError(f"{json_file}: image id {img['id']!r} has no size, and {e}") from None
        width, height = int(round(width)), int(round(height))
        annotations = per_image[img["id"]]
        for ann in annotations:
            x, y, w, h = ann["bbox"]
            outside += x >= width or y >= height or x + w <= 0 or y + h <= 0
        records.append({"file_name": path, "height": height, "width": width, "image_id": img["id"],
                        "annotations": annotations})

    if backslash:
        logger.warning("%s: '\\' in file names read as '/' (folder separators)", json_file)
    if orphans:
        logger.warning("%s: %d annotation(s) refer to image ids not in 'images' and are left out (ids %s)",
                       json_file, len(orphans), orphans[:_MAX_LISTED])
    if zero_area:
        logger.warning("%s: %d box(es) of zero width or height are left out of training (annotation ids %s); "
                       "COCO evaluation keeps them as the json has them", json_file, len(zero_area),
                       zero_area[:_MAX_LISTED])
    if outside:
        logger.warning("%s: %d box(es) lie wholly outside their image; training drops them after clipping",
                       json_file, outside)
    empty = sum(1 for r in records if not r["annotations"])
    logger.info("Loaded %d images (%d without boxes, %d crowd boxes) from %s", len(records), empty, crowd, json_file)
    return records


def register_coco_dataset(name: str, json_file: str, image_root: str, label_splits: bool = True) -> None:
    """Register a COCO-style detection json (e.g. exported by an annotation tool) under
    ``name``; loading checks it entry by entry (:func:`check_coco_detection_json`) and
    reads it as :func:`load_coco_detection_json` describes. The metadata holds
    ``json_file``/``image_root``, so ``COCOEvaluator`` scores against the json itself.
    Re-registering replaces the old entry. ``label_splits``: also register its label splits
    (:func:`disco_detr.data.label_splits.register_label_splits`, lazy too)."""
    _replace(name)
    DatasetCatalog.register(name, lambda: load_coco_detection_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if label_splits:
        register_label_splits(name)


# --------------------------------------------------------------------------- demo

def register_demo_datasets(root: str | None = None) -> None:
    """Register the demo splits: ``disco_demo_{train,val}`` (COCO json),
    ``disco_demo_voc_{train,val}`` (the same images in PASCAL VOC layout) and
    ``disco_demo_unlabelled`` (unlabelled images with EdgeBoxes proposals in
    ``<root>/proposals/unlabelled.sqlite``, for DisCo / Siamese DETR pre-training) and
    ``disco_demo_unlabelled_ss`` (the same images with selective-search proposals in
    ``<root>/proposals/unlabelled_ss.sqlite``, for DETReg); ``disco_demo_train`` has label
    splits (``disco_demo_train_10pct_fold0``, ...).

    ``root`` defaults to ``$DISCO_DEMO_ROOT`` or ``datasets/demo`` (made by
    ``tools/make_demo_data.py``). Re-registering replaces the earlier entries, so tests can
    point the names at a temporary folder.
    """
    root = root or _demo_root()
    for split in ("train", "val"):
        register_coco_dataset(f"disco_demo_{split}", os.path.join(root, "annotations", f"instances_{split}.json"),
                              os.path.join(root, "images", split), label_splits=split == "train")
        register_voc_dataset(f"disco_demo_voc_{split}", os.path.join(root, "VOC"), split, DEMO_CLASSES, year=2007,
                             label_splits=False)
    register_unlabelled_images("disco_demo_unlabelled", os.path.join(root, "images", "unlabelled"),
                               os.path.join(root, "proposals", "unlabelled.sqlite"))
    register_unlabelled_images("disco_demo_unlabelled_ss", os.path.join(root, "images", "unlabelled"),
                               os.path.join(root, "proposals", "unlabelled_ss.sqlite"), "selective_search")


# --------------------------------------------------------------------------- loading

def check_dataset_available(name: str) -> None:
    """Raise FileNotFoundError naming the missing folder/file of a registered dataset."""
    if name not in DatasetCatalog.list():
        listed = [n for n in DatasetCatalog.list() if not is_label_split(n)]
        raise KeyError(f"Dataset {name!r} is not registered. Registered: {', '.join(listed)} and their label "
                       f"splits (<name>_10pct_fold0, <name>_5shot_fold0, ...; see datasets/README.md)")
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "label_split_parent") or hasattr(meta, "parents"):  # the files are the parents'
        for parent in getattr(meta, "parents", None) or (meta.label_split_parent,):
            check_dataset_available(parent)
        return
    hint = " Put the data there (see datasets/README.md) or set $DETECTRON2_DATASETS to the folder that holds it."
    if hasattr(meta, "dirname"):  # VOC (a "json_file" here is COCOEvaluator's conversion, not the source)
        try:
            voc_layout(meta.dirname, getattr(meta, "split", None))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"Dataset {name!r}: {e}.{hint}") from None
    elif hasattr(meta, "json_file"):
        for what, path in (("annotation file", meta.json_file), ("image folder", getattr(meta, "image_root", ""))):
            if not os.path.exists(path):
                raise FileNotFoundError(f"Dataset {name!r}: {what} {path!r} does not exist.{hint}")


def check_images(dicts: list[dict], what: str = "dataset") -> None:
    """Open the header of every image (progress bar for large sets): raise ``OSError``
    listing each image that is missing, unreadable, or whose size differs from its
    record's ``height``/``width`` (the size after EXIF orientation)."""
    problems = []
    for record in tqdm(dicts, desc=f"checking images ({what})", unit="image", disable=len(dicts) < 2000,
                       leave=False):
        try:
            width, height = image_size(record["file_name"])
        except OSError as e:
            problems.append(str(e))
            continue
        if "height" in record and (width, height) != (record["width"], record["height"]):
            problems.append(f"{record['file_name']}: the image is {width}x{height} (WxH) but its annotation "
                            f"says {record['width']}x{record['height']}")
    if problems:
        raise OSError(f"{what}: {len(problems)} image(s) cannot be used:{_listing(problems)}")


def load_detection_dicts(names: str | list[str], filter_empty: bool = True, strict: bool = False,
                         split_dir: str | None = None) -> list[dict]:
    """Dataset dicts of one or more registered datasets, like detectron2's
    ``get_detection_dataset_dicts``, after checking that every dataset's files exist.

    ``filter_empty``: drop images without a non-crowd box (training).
    ``strict`` (evaluation): a VOC annotation file that cannot be read is an error listing
    every such file, and every image header is opened (:func:`check_images`), so bad input
    fails before inference starts. Without ``strict`` (training) unreadable VOC files are
    logged by name and left out, and a bad image is logged and replaced when the training
    mapper meets it. A bad COCO json entry is an error either way.
    ``split_dir`` (e.g. ``"${train.output_dir}/label_splits"`` in a config): the image ids of
    each label split among ``names`` are written there as ``<split name>.json`` by the main
    process (:func:`disco_detr.data.label_splits.save_label_split`), to read back or share.
    """
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        check_dataset_available(name)
    per_dataset = []
    for name in names:
        try:
            dicts = DatasetCatalog.get(name)
        except UnreadableAnnotationsError as e:
            if strict or not e.records:
                raise
            for _, message in e.errors:
                logger.warning("Leaving out %s", message)
            logger.warning("Dataset %r: %d annotation file(s) left out, %d used", name, len(e.errors), len(e.records))
            dicts = e.records
        except KeyError as e:  # detectron2's loader: e.g. a category id that is not in "categories"
            if not hasattr(MetadataCatalog.get(name), "json_file"):
                raise
            raise KeyError(f"While loading {MetadataCatalog.get(name).json_file}: {e}") from e
        if not dicts:
            raise ValueError(f"Dataset {name!r} is empty.")
        if split_dir is not None and is_label_split(name) and comm.is_main_process():
            logger.info("Label split %s written to %s", name, save_label_split(name, split_dir))
        per_dataset.append(dicts)
    dicts = list(itertools.chain.from_iterable(per_dataset))
    has_instances = "annotations" in dicts[0]
    if has_instances and all(hasattr(MetadataCatalog.get(n), "thing_classes") for n in names):
        check_metadata_consistency("thing_classes", names)
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
        if not dicts:
            raise ValueError(f"No image of {names} has a usable (non-crowd) box.")
    if has_instances and all(hasattr(MetadataCatalog.get(n), "thing_classes") for n in names):
        print_instances_class_histogram(dicts, MetadataCatalog.get(names[0]).thing_classes)
    if strict:
        check_images(dicts, what=", ".join(names))
    return dicts


register_builtin_voc()
register_demo_datasets()
register_label_splits("coco_2017_train", fractions=COCO_SSOD_FRACTIONS)
