# Table 3 (Conditional DETR, VOC 51.4): DMOQF on (distance-aware groups, additive fusion), CLD off.
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

model.weight_contrast = 0.0
train.output_dir = "./output/disco_cond_dmoqf_only"
