from .build import StreamDataset, StreamSampler, build_train_loader, set_loader_start
from .datasets import (
    check_dataset_available,
    load_detection_dicts,
    register_coco_dataset,
    register_demo_datasets,
    register_voc_dataset,
)
from .detr_mapper import DetrDatasetMapper, read_rgb_image

__all__ = [
    "DetrDatasetMapper",
    "StreamDataset",
    "StreamSampler",
    "build_train_loader",
    "check_dataset_available",
    "load_detection_dicts",
    "read_rgb_image",
    "register_coco_dataset",
    "register_demo_datasets",
    "register_voc_dataset",
    "set_loader_start",
]
