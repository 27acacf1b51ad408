# DETReg pre-training of single-scale Deformable DETR R50 (res5), with the release's DETReg
# settings, data, optimiser and schedule (configs/common/pretrain.py); C3 embedding targets (the backbone
# also outputs res3).
from .common.models.deformable_detr_r50 import model as _detector
from .common.models.deformable_detr_r50 import single_scale
from .common.pretrain import detreg_pretraining

single_scale(_detector)
_detector.backbone.out_features = ("res3", "res5")  # res3 (C3): the embedding targets
dataloader, lr_multiplier, model, optimizer, train = detreg_pretraining(_detector)
train.output_dir = "./output/detreg_deformable_ss"
