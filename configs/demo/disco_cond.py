# CPU demo: DisCo DETR pre-training of the demo detector (configs/demo/cond.py: frozen
# ImageNet MobileNetV2, d=128, 3+3 layers, 30 queries -> 3 queries per box with n = 10) on
# the demo's 300 unlabelled images with their EdgeBoxes proposals. Views are made from a
# 128-160 px resize (the paper: 320-480) and crops are 64 px (the paper: 128) to fit a CPU.
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "cond", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_disco"
