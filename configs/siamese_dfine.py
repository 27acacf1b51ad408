# Siamese DETR baseline around D-FINE R50-vd (fixed query groups, additive fusion, no CLD), with
# configs/disco_dfine.py's detector, features, data and schedule.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "dfine")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/siamese_dfine"
