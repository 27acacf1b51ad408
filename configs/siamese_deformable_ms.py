# Table 3, Deformable-MS baseline (VOC 48.7): Siamese DETR (fixed query groups, additive
# fusion, no CLD) around multi-scale Deformable DETR.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "deformable_ms")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/siamese_deformable_ms"
