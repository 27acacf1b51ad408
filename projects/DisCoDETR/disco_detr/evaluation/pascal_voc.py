"""PASCAL VOC AP whose ground truth comes from the project's tolerant VOC reader.

detectron2's ``PascalVOCDetectionEvaluator`` re-reads every annotation file with its own
parser at the *end* of inference (``int()`` of ``<difficult>``, ``<truncated>`` and of each
coordinate), so files written by annotation tools (empty ``<difficult/>``, float
coordinates, no ``<pose>``) crash it after the whole test set has run.
:class:`VOCDetectionEvaluator` reads the ground truth when it is built, from the dataset's
own dicts (:func:`disco_detr.data.voc.load_voc_dicts` for VOC folders), so an unreadable
file fails before inference, naming the file, and what loads also evaluates.

The metric is the devkit's (and detectron2's): per class and IoU threshold, detections of
all images sorted by score; each is a true positive when its best-overlapping ground-truth
box (IoU > threshold, computed in VOC's inclusive-pixel convention: widths are
``xmax - xmin + 1``) is not difficult and not yet taken, ignored when that box is
difficult, a false positive otherwise. AP is VOC2007's 11-point interpolation (``year``
2007) or the area under the interpolated precision/recall curve (2012). "AP" is the mean
over IoU 0.50:0.05:0.95 of the mean over classes, "AP50"/"AP75" at 0.5/0.75, in percent.

Coordinates: predictions arrive as 0-based ``XYXY_ABS`` pixels of the original image and
are compared in VOC coordinates after :func:`disco_detr.data.voc.xyxy_to_voc_box`
(``x0 + 1, y0 + 1, x1, y1``), the inverse of loading; ground truth dicts are converted the
same way, so VOC files are scored on the numbers they contain.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..data.voc import xyxy_to_voc_box

__all__ = ["VOCDetectionEvaluator", "voc_average_precision", "voc_detection_outcomes", "with_dataset_evaluators"]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = tuple(range(50, 100, 5))  # percent


def voc_average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP in [0, 1] from cumulative recall/precision (1-D, detections in score order).

    11-point (VOC2007): mean over r in {0, 0.1, ..., 1} of the highest precision at recall
    >= r (0 when recall never reaches r). Otherwise: the area under the precision envelope
    (precision made non-increasing from the right), summed where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        points = np.arange(11) * 0.1  # the devkit's 0:0.1:1, same floating-point values
        return float(sum(precision[recall >= r].max() if np.any(recall >= r) else 0.0 for r in points) / 11.0)
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def _inclusive_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, M) IoU of VOC boxes (N, 4) and (M, 4), pixels inclusive (+1 on each side)."""
    iw = np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + 1.0
    ih = np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + 1.0
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_b = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    area_g = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    return inter / (area_b[:, None] + area_g[None, :] - inter)


def voc_detection_outcomes(best_iou: np.ndarray, best_gt: np.ndarray, best_difficult: np.ndarray,
                           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """True/false positives of detections of one class, already sorted by score.

    ``best_iou`` (N,): each detection's highest IoU with a ground-truth box of its class in
    its image (-inf when there is none); ``best_gt`` (N,): a key unique to that box (image
    and box); ``best_difficult`` (N,): whether that box is difficult. A detection is a true
    positive when ``best_iou > threshold``, the box is not difficult and no higher-scored
    detection took it; ignored (neither) when the box is difficult. Returns (tp, fp), (N,)
    float arrays of 0/1.
    """
    hit = best_iou > threshold
    counted = hit & ~best_difficult
    tp = np.zeros(len(best_iou))
    if counted.any():
        idx = np.nonzero(counted)[0]
        _, first = np.unique(best_gt[idx], return_index=True)  # first (highest-scored) claim of each box
        tp[idx[first]] = 1.0
    fp = (~hit | (counted & (tp == 0))).astype(np.float64)
    return tp, fp


class VOCDetectionEvaluator(DatasetEvaluator):
    """VOC AP of box detections; a drop-in for detectron2's ``PascalVOCDetectionEvaluator``.

    Args:
        dataset_name: a registered dataset. VOC folders (``register_voc_dataset`` and the
            builtin ``voc_*`` names) give difficult flags; for any other dataset, crowd boxes
            play the role of difficult ones.
        num_classes: the model's number of classes; when given it must equal the dataset's,
            checked here, before inference.
        use_07_metric: 11-point AP; default: the dataset's ``year`` is 2007.
        result_key: the key of the returned results (detectron2 uses "bbox", which clashes
            with ``COCOEvaluator`` when both run on one dataset).

    The ground truth is read when the evaluator is built: an annotation file that cannot be
    read raises there, naming the file.
    """

    def __init__(self, dataset_name: str, num_classes: int | None = None, use_07_metric: bool | None = None,
                 result_key: str = "pascal_voc"):
        self._dataset_name = dataset_name
        self._result_key = result_key
        dicts = DatasetCatalog.get(dataset_name)  # VOC: the shared reader; raises naming bad files
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.thing_classes)
        if num_classes is not None and num_classes != len(self._class_names):
            raise ValueError(f"VOC evaluation of {dataset_name!r}: the model predicts {num_classes} classes but "
                             f"the dataset has {len(self._class_names)}: {self._class_names}")
        self._use_07_metric = getattr(meta, "year", 2012) == 2007 if use_07_metric is None else use_07_metric
        self._gt: dict = {}
        for record in dicts:
            image_id = record["image_id"]
            if image_id in self._gt:
                raise ValueError(f"VOC evaluation of {dataset_name!r}: image id {image_id!r} appears twice")
            annotations = record.get("annotations", [])
            boxes = np.array([BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                              for a in annotations], dtype=np.float64).reshape(-1, 4)
            self._gt[image_id] = (
                xyxy_to_voc_box(boxes),
                np.array([a["category_id"] for a in annotations], dtype=np.int64),
                np.array([bool(a.get("difficult", a.get("iscrowd", 0))) for a in annotations], dtype=bool),
            )
        self.reset()

    def reset(self):
        self._predictions = []  # (image_id, VOC boxes (N, 4) float64, scores (N,), classes (N,))

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if image_id not in self._gt:
                raise KeyError(f"VOC evaluation of {self._dataset_name!r}: image id {image_id!r} is not in the dataset")
            inst = out["instances"].to("cpu")
            classes = inst.pred_classes.numpy().astype(np.int64)
            if classes.size and (classes.min() < 0 or classes.max() >= len(self._class_names)):
                raise ValueError(f"VOC evaluation of {self._dataset_name!r}: predicted class {classes.max()} is "
                                 f"outside [0, {len(self._class_names)})")
            self._predictions.append((image_id, xyxy_to_voc_box(inst.pred_boxes.tensor.numpy()),
                                      inst.scores.numpy().astype(np.float64), classes))

    def evaluate(self):
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        predictions = [p for per_rank in all_predictions for p in per_rank]
        positives = np.zeros(len(self._class_names), dtype=np.int64)
        for _, gt_classes, gt_difficult in self._gt.values():
            np.add.at(positives, gt_classes[~gt_difficult], 1)
        ap = np.full((len(IOU_THRESHOLDS), len(self._class_names)), np.nan)
        for cls in range(len(self._class_names)):
            if positives[cls] == 0:
                continue
            best_iou, best_gt, best_difficult = self._sorted_detections(predictions, cls)
            for t, threshold in enumerate(IOU_THRESHOLDS):
                tp, fp = voc_detection_outcomes(best_iou, best_gt, best_difficult, threshold / 100.0)
                tp, fp = np.cumsum(tp), np.cumsum(fp)
                recall = tp / positives[cls]
                precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
                ap[t, cls] = voc_average_precision(recall, precision, self._use_07_metric)
        missing = [n for n, p in zip(self._class_names, positives) if p == 0]
        if missing:
            logger.warning("VOC evaluation of %s: no (non-difficult) ground truth for %s; they are left out of "
                           "the mean", self._dataset_name, missing)
        per_threshold = np.nanmean(ap, axis=1) * 100 if len(missing) < len(self._class_names) else ap[:, 0]
        result = OrderedDict(AP=float(np.mean(per_threshold)), AP50=float(per_threshold[0]),
                             AP75=float(per_threshold[IOU_THRESHOLDS.index(75)]))
        for name, value in zip(self._class_names, ap[0]):
            result[f"AP50-{name}"] = float(value * 100)
        logger.info("VOC AP (%s metric) of %s: %s", "11-point 2007" if self._use_07_metric else "area",
                    self._dataset_name, dict(result))
        return OrderedDict({self._result_key: result})

    def _sorted_detections(self, predictions, cls: int):
        """(best IoU, unique key of the best box, its difficult flag) per detection of ``cls``,
        in decreasing score order (ties keep arrival order)."""
        ious, keys, difficult, scores = [], [], [], []
        for image_id, boxes, s, c in predictions:
            sel = c == cls
            n = int(sel.sum())
            if n == 0:
                continue
            gt_boxes, gt_classes, gt_difficult = self._gt[image_id]
            gt_sel = np.nonzero(gt_classes == cls)[0]
            if gt_sel.size:
                iou = _inclusive_iou(boxes[sel], gt_boxes[gt_sel])
                j = iou.argmax(axis=1)
                ious.append(iou[np.arange(n), j])
                keys.append([(image_id, int(k)) for k in gt_sel[j]])
                difficult.append(gt_difficult[gt_sel[j]])
            else:
                ious.append(np.full(n, -np.inf))
                keys.append([(image_id, -1)] * n)
                difficult.append(np.zeros(n, dtype=bool))
            scores.append(s[sel])
        if not scores:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        order = np.argsort(-np.concatenate(scores), kind="stable")
        # one integer per distinct (image, box): np.unique needs a sortable array
        flat = [k for per_image in keys for k in per_image]
        index = {k: i for i, k in enumerate(dict.fromkeys(flat))}
        codes = np.array([index[k] for k in flat], dtype=np.int64)
        return np.concatenate(ious)[order], codes[order], np.concatenate(difficult)[order]


def with_dataset_evaluators(evaluator, dataset_name, num_classes: int | None = None):
    """The evaluator(s) the dataset's type asks for: ``evaluator`` (one, a list or ``DatasetEvaluators``) plus
    a :class:`VOCDetectionEvaluator` (result key "pascal_voc") when ``dataset_name`` is one registered dataset
    whose metadata ``evaluator_type`` is "pascal_voc" and ``evaluator`` has no VOC evaluator; else ``evaluator``
    unchanged. So a VOC dataset gets VOC AP beside COCO-style AP whichever config's evaluator it runs under."""
    if not isinstance(dataset_name, str) or MetadataCatalog.get(dataset_name).get("evaluator_type") != "pascal_voc":
        return evaluator
    if isinstance(evaluator, DatasetEvaluators):
        evaluators = list(evaluator._evaluators)
    elif isinstance(evaluator, Sequence):  # a list, or the ListConfig that instantiate makes of one
        evaluators = list(evaluator)
    else:
        evaluators = [evaluator]
    if any(isinstance(e, (VOCDetectionEvaluator, PascalVOCDetectionEvaluator)) for e in evaluators):
        return evaluator
    logger.info("%r is a PASCAL VOC dataset: adding VOC AP (result key 'pascal_voc') to the evaluation",
                dataset_name)
    return [*evaluators, VOCDetectionEvaluator(dataset_name, num_classes=num_classes)]
