# CPU demo: the Siamese DETR baseline of configs/demo/disco_dino.py (fixed query groups, additive fusion,
# no CLD), as configs/siamese_dino.py.
from ..common.pretrain import pretraining

_cfg = pretraining("siamese", "dino", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.ddp.find_unused_parameters = True  # the encoder heads get no gradient in pre-training
train.output_dir = "./output/demo/pretrain_siamese_dino"
