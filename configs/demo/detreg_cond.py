# CPU demo: DETReg pre-training of the demo detector (configs/demo/cond.py: frozen ImageNet MobileNetV2, d=128,
# 3+3 layers, 30 queries) on the demo's 300 unlabelled images with their selective-search proposals, with the
# release's DETReg settings (configs/common/pretrain.py). Scaled to the demo as DisCo's preset is
# (configs/demo/disco_cond.py): views from a 128-160 px resize (the release: 320-480) or a resize to
# 140-200 -> crop 128-200 -> the same resize, 64-px crops (the release: 128), the first 10 proposals (the
# release: 30; 10 keeps 3 queries per box as DisCo's n = 10 does with 30 queries), embedding targets from the
# stride-8 stage (the release's C3 is stride 8 too). The same 50 iterations, batch and optimiser as the other
# demo pre-trainings.
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "cond", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_detreg"
