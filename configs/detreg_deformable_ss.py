# DETReg pre-training of single-scale Deformable DETR R50 (res5), with the release's DETReg
# settings, data, optimiser and schedule (configs/common/pretrain.py); C3 embedding targets (the backbone
# also outputs res3).
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "deformable_ss")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_deformable_ss"
