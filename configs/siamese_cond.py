# Siamese DETR baseline (Huang et al., CVPR 2023) as published: fixed, spatially random query
# groups (query i gets proposal floor(i / (N / n))), the other view's object feature *added*
# to the positional query (as DisCo does), no CLD. Everything else as configs/disco_cond.py.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/siamese_cond"
