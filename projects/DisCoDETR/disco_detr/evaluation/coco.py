"""detectron2's COCOEvaluator with its ground truth checked when it is built.

pycocotools needs ``area`` and ``iscrowd`` in every ground-truth annotation and fails on
their absence only after inference, inside ``COCOeval``; detectron2's evaluator also fails
at the end when the model predicts more classes than the dataset has. Annotation tools
often omit ``area``/``iscrowd``. :class:`COCODetectionEvaluator` checks the json entry by
entry (:func:`disco_detr.data.datasets.check_coco_detection_json`) and the number of
classes before inference, and fills a missing ``iscrowd`` with 0 and a missing ``area``
with the box's ``width * height`` (in memory; the file is not changed).
"""
from __future__ import annotations

import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

from ..data.datasets import check_coco_detection_json

__all__ = ["COCODetectionEvaluator"]

logger = logging.getLogger(__name__)


class COCODetectionEvaluator(COCOEvaluator):
    """``COCOEvaluator`` (same arguments) plus ``num_classes``: the model's number of
    classes, which must equal the number of categories of the ground truth (checked here).

    For datasets without a json (VOC folders) detectron2 converts the dataset dicts to a
    json in ``output_dir``, and remembers that file in the dataset's metadata; here every
    evaluator converts again (``allow_cached_coco`` defaults to False), so a corrected
    dataset is never scored against a stale or deleted conversion.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, num_classes=None,
                 allow_cached_coco=False, **kwargs):
        meta = MetadataCatalog.get(dataset_name)
        if hasattr(meta, "dirname") and hasattr(meta, "json_file"):
            # a VOC dataset converted by an earlier evaluator (detectron2 stores the converted
            # file's path in the dataset's metadata): convert again, into this output_dir
            del meta.json_file
        super().__init__(dataset_name, tasks, distributed, output_dir, allow_cached_coco=allow_cached_coco, **kwargs)
        json_file = self._metadata.json_file
        data = self._coco_api.dataset
        check_coco_detection_json(data, json_file)
        categories = sorted(c["id"] for c in data["categories"])
        if num_classes is not None and num_classes != len(categories):
            raise ValueError(f"COCO evaluation of {dataset_name!r}: the model predicts {num_classes} classes but "
                             f"{json_file} has {len(categories)} categories")
        if not hasattr(self._metadata, "thing_dataset_id_to_contiguous_id") and categories != list(
                range(len(categories))):
            # the same mapping as loading (increasing category id), in case the dicts were not loaded here
            self._metadata.thing_dataset_id_to_contiguous_id = {c: i for i, c in enumerate(categories)}
        filled = 0
        for ann in self._coco_api.anns.values():
            if "iscrowd" not in ann or "area" not in ann:
                filled += 1
                ann.setdefault("iscrowd", 0)
                ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        if filled:
            logger.info("%s: 'area'/'iscrowd' missing in %d annotation(s); using width*height and 0",
                        json_file, filled)
