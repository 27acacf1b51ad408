# DETReg pre-training of Conditional DETR R50 (300 queries), with the release's DETReg
# settings, data, optimiser and 40/50 schedule (configs/common/pretrain.py). The release has no Conditional
# DETR: the embedding target is C3 as in the release, so the frozen backbone also outputs res3 (the detector
# reads res5 only).
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_cond"
