# DETReg pre-training of Conditional DETR R50 (300 queries), with the release's DETReg
# settings, data, optimiser and 40/50 schedule (configs/common/pretrain.py). The release has no Conditional
# DETR: the embedding target is C3 as in the release, so the frozen backbone also outputs res3 (the detector
# reads res5 only).
from .common.models.conditional_detr_r50 import model as _detector
from .common.pretrain import detreg_pretraining

_detector.backbone.out_features = ("res3", "res5")  # res3 (C3): the embedding targets
dataloader, lr_multiplier, model, optimizer, train = detreg_pretraining(_detector)
optimizer.params.lr_factor_keys = {}  # no sampling offsets / reference points to slow down
train.output_dir = "./output/detreg_cond"
