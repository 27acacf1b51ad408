# DETReg pre-training of single-scale Deformable DETR R50 (res5), with configs/detreg_deformable_ms.py's
# DETReg settings, data, optimiser and schedule; C3 embedding targets (the backbone also outputs res3).
from .common.models.deformable_detr_r50 import model as _detector
from .common.models.deformable_detr_r50 import single_scale
from .detreg_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

single_scale(_detector)
_detector.num_classes = 1
_detector.criterion = None
_detector.backbone.freeze_at = 5
_detector.backbone.out_features = ("res3", "res5")

model.detector = _detector
train.output_dir = "./output/detreg_deformable_ss"
