# Small preset: fine-tune D-FINE (its demo preset: frozen ImageNet MobileNetV2, d=128) on photos at
# 320-480 px, classes from the dataset (configs/common/small.py). Set your datasets (docs/own_data.md) and
# train.init_checkpoint (a configs/small/*_dfine.py pre-training's model_final.pth, or the MobileNetV2 weights).
from ..common.small import small_finetuning

_cfg = small_finetuning("dfine")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train
