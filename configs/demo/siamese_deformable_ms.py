# CPU demo: the Siamese DETR baseline of configs/demo/disco_deformable_ms.py (fixed query groups,
# additive fusion, no CLD).
from ..common.pretrain import pretraining

_cfg = pretraining("siamese", "deformable_ms", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo_deformable_ms/pretrain_siamese"
