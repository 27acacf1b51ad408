# PASCAL VOC evaluation of dataloader.test.dataset.names: COCO-style AP (result key "bbox", the
# paper's metric) and VOC AP (result key "pascal_voc"; 11-point for VOC2007, difficult objects
# ignored). Both read the ground truth through the project's tolerant VOC reader when they are
# built, before inference, and check the model's num_classes against the dataset.
# Use: `dataloader.evaluator = voc_evaluators` in a VOC fine-tuning config.
from detectron2.config import LazyCall as L

from disco_detr.evaluation import COCODetectionEvaluator, VOCDetectionEvaluator

voc_evaluators = [
    L(COCODetectionEvaluator)(dataset_name="${dataloader.test.dataset.names}", tasks=("bbox",),
                              output_dir="${train.output_dir}/inference", num_classes="${model.num_classes}"),
    L(VOCDetectionEvaluator)(dataset_name="${dataloader.test.dataset.names}", num_classes="${model.num_classes}"),
]
