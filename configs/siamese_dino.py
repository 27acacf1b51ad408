# Siamese DETR baseline (fixed query groups, additive fusion, no CLD) around DINO 4-scale R50-vd.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "dino")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.ddp.find_unused_parameters = True  # the encoder heads get no gradient in pre-training
train.output_dir = "./output/siamese_dino"
