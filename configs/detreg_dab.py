# DETReg pre-training of DAB-DETR R50 (300 anchor queries), with configs/detreg_deformable_ms.py's DETReg
# settings, data, optimiser and schedule; C3 embedding targets (the backbone also outputs res3).
from .common.models.dab_detr_r50 import model as _detector
from .detreg_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

_detector.num_classes = 1
_detector.criterion = None
_detector.backbone.freeze_at = 5
_detector.backbone.out_features = ("res3", "res5")

model.detector = _detector
optimizer.params.lr_factor_keys = {}
train.output_dir = "./output/detreg_dab"
