"""Evaluators that check their ground truth when they are built, before inference starts."""
from .coco import COCODetectionEvaluator
from .pascal_voc import VOCDetectionEvaluator, voc_average_precision, with_dataset_evaluators

__all__ = ["COCODetectionEvaluator", "VOCDetectionEvaluator", "voc_average_precision", "with_dataset_evaluators"]
