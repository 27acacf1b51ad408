from .build import StreamDataset, StreamSampler, build_train_loader, set_loader_start
from .datasets import (
    check_dataset_available,
    load_detection_dicts,
    read_class_names,
    register_coco_dataset,
    register_concatenated_dataset,
    register_demo_datasets,
    register_voc_dataset,
)
from .detr_mapper import DetrDatasetMapper
from .image_io import IMAGE_EXTENSIONS, read_rgb_image
from .label_splits import (
    LabelSplit,
    LabelSplitError,
    empty_categories,
    is_label_split,
    label_split_name,
    read_label_split,
    read_ssod_split,
    register_label_split,
    register_label_splits,
    sample_fraction,
    sample_shots,
    save_label_split,
    split_pool,
    write_label_split,
)
from .mosaic import MosaicDetrDatasetMapper
from .pretrain_datasets import load_unlabelled_folder, register_unlabelled_images

__all__ = [
    "DetrDatasetMapper",
    "LabelSplit",
    "LabelSplitError",
    "MosaicDetrDatasetMapper",
    "StreamDataset",
    "StreamSampler",
    "build_train_loader",
    "check_dataset_available",
    "empty_categories",
    "is_label_split",
    "label_split_name",
    "load_detection_dicts",
    "load_unlabelled_folder",
    "read_class_names",
    "read_label_split",
    "IMAGE_EXTENSIONS",
    "read_rgb_image",
    "read_ssod_split",
    "register_coco_dataset",
    "register_concatenated_dataset",
    "register_demo_datasets",
    "register_label_split",
    "register_label_splits",
    "register_unlabelled_images",
    "register_voc_dataset",
    "sample_fraction",
    "sample_shots",
    "save_label_split",
    "set_loader_start",
    "split_pool",
    "write_label_split",
]
