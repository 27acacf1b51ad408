# CPU demo: the Siamese DETR baseline of configs/demo/disco_dab.py (fixed query groups, additive fusion into
# the content query, no CLD), as configs/siamese_dab.py.
from ..common.pretrain import pretraining

_cfg = pretraining("siamese", "dab", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_siamese_dab"
