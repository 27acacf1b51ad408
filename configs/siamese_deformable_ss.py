# Siamese DETR baseline for single-scale Deformable DETR: fixed query groups, additive fusion
# into the positional query (as Siamese DETR's release does for Deformable DETR), no CLD.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "deformable_ss")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/siamese_deformable_ss"
