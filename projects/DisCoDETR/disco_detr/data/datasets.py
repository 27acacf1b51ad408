"""Dataset registration and availability checks.

Builtin detectron2 names work as usual (``coco_2017_train``, ``voc_2007_trainval``, ... under
``$DETECTRON2_DATASETS``, default ``./datasets``). This module adds the demo dataset, a
check that names the missing folder before loading starts, and a loader of dataset dicts
that turns detectron2's bare KeyErrors into errors that name the file.
"""
from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances, register_pascal_voc

from .demo import DEMO_CLASSES
from .pretrain_datasets import register_unlabelled_images

__all__ = ["DEMO_ROOT_ENV", "register_demo_datasets", "check_dataset_available", "load_detection_dicts"]

DEMO_ROOT_ENV = "DISCO_DEMO_ROOT"


def _demo_root() -> str:
    return os.environ.get(DEMO_ROOT_ENV, os.path.join("datasets", "demo"))


def register_demo_datasets(root: str | None = None) -> None:
    """Register the demo splits: ``disco_demo_{train,val}`` (COCO json),
    ``disco_demo_voc_{train,val}`` (the same images in PASCAL VOC layout) and
    ``disco_demo_unlabelled`` (unlabelled images with proposals in
    ``<root>/proposals/unlabelled.sqlite``, for pre-training).

    ``root`` defaults to ``$DISCO_DEMO_ROOT`` or ``datasets/demo`` (made by
    ``tools/make_demo_data.py``). Re-registering replaces the earlier entries, so tests can
    point the names at a temporary folder.
    """
    root = root or _demo_root()
    for split in ("train", "val"):
        for name in (f"disco_demo_{split}", f"disco_demo_voc_{split}"):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
        register_coco_instances(
            f"disco_demo_{split}", {},
            os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, "images", split),
        )
        register_pascal_voc(f"disco_demo_voc_{split}", os.path.join(root, "VOC"), split, 2007,
                            class_names=list(DEMO_CLASSES))
    register_unlabelled_images("disco_demo_unlabelled", os.path.join(root, "images", "unlabelled"),
                               os.path.join(root, "proposals", "unlabelled.sqlite"))


def check_dataset_available(name: str) -> None:
    """Raise FileNotFoundError naming the missing folder/file of a registered dataset."""
    if name not in DatasetCatalog.list():
        raise KeyError(f"Dataset {name!r} is not registered. Registered: {', '.join(DatasetCatalog.list())}")
    meta = MetadataCatalog.get(name)
    needed = []
    if hasattr(meta, "json_file"):
        needed += [("annotation file", meta.json_file), ("image folder", meta.image_root)]
    if hasattr(meta, "dirname"):
        split = getattr(meta, "split", "")
        needed += [("VOC folder", meta.dirname),
                   ("VOC split list", os.path.join(meta.dirname, "ImageSets", "Main", f"{split}.txt"))]
    for what, path in needed:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"Dataset {name!r}: {what} {path!r} does not exist. Put the data there (see "
                f"datasets/README.md) or set $DETECTRON2_DATASETS to the folder that holds it."
            )


def load_detection_dicts(names: str | list[str], filter_empty: bool = True) -> list[dict]:
    """detectron2's ``get_detection_dataset_dicts`` after checking that every dataset exists."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        check_dataset_available(name)
    try:
        return get_detection_dataset_dicts(names, filter_empty=filter_empty)
    except KeyError as e:  # e.g. an annotation whose category id is not in "categories"
        files = [getattr(MetadataCatalog.get(n), "json_file", n) for n in names]
        raise KeyError(f"While loading {', '.join(files)}: {e}") from e


register_demo_datasets()
