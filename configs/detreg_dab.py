# DETReg pre-training of DAB-DETR R50 (300 anchor queries), with the release's DETReg
# settings, data, optimiser and schedule; C3 embedding targets (the backbone also outputs res3).
from .common.models.dab_detr_r50 import model as _detector
from .common.pretrain import detreg_pretraining

_detector.backbone.out_features = ("res3", "res5")  # res3 (C3): the embedding targets
dataloader, lr_multiplier, model, optimizer, train = detreg_pretraining(_detector)
optimizer.params.lr_factor_keys = {}  # no sampling offsets / reference points to slow down
train.output_dir = "./output/detreg_dab"
