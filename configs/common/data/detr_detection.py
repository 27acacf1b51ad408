# Fine-tuning data: DETR augmentation, COCO-style evaluation. Experiment files set the
# dataset names and batch size; the evaluator follows dataloader.test.dataset.names.
# Training leaves out (and logs) VOC annotation files it cannot read; the test loader is
# strict: every annotation and image header is checked before inference starts.
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from omegaconf import OmegaConf

from disco_detr.data import DetrDatasetMapper, build_train_loader, load_detection_dicts
from disco_detr.evaluation import COCODetectionEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_train_loader)(
    # a label split's image ids are written next to the run (``<split>.json``); other datasets write nothing
    dataset=L(load_detection_dicts)(names="coco_2017_train", filter_empty=True, strict=False,
                                    split_dir="${train.output_dir}/label_splits"),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        num_classes="${model.num_classes}",
        min_sizes=tuple(range(480, 801, 32)),
        max_size=1333,
        crop_resize_sizes=(400, 500, 600),
        crop_size=(384, 600),
        crop_probability=0.5,
    ),
    total_batch_size=64,
    num_workers=4,
    seed="${train.seed}",
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(load_detection_dicts)(names="coco_2017_val", filter_empty=False, strict=True),
    mapper=L(DetrDatasetMapper)(is_train=False, num_classes="${model.num_classes}", min_sizes=(800,), max_size=1333),
    num_workers=4,
)

dataloader.evaluator = L(COCODetectionEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox",),
    output_dir="${train.output_dir}/inference",
    num_classes="${model.num_classes}",
)
