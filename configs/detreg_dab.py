# DETReg pre-training of DAB-DETR R50 (300 anchor queries), with the release's DETReg
# settings, data, optimiser and schedule; C3 embedding targets (the backbone also outputs res3).
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "dab")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_dab"
