# CPU demo: the Siamese DETR baseline of configs/demo/disco_dfine.py (fixed query groups, additive fusion,
# no CLD), as configs/siamese_dfine.py.
from ..common.pretrain import pretraining

_cfg = pretraining("siamese", "dfine", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_siamese_dfine"
