# DETReg pre-training of D-FINE R50-vd (300 queries from IoU-aware selection), with
# the release's DETReg settings, data, optimiser and schedule (configs/common/pretrain.py); C3 targets.
# In training D-FINE's decoder output starts with its encoder's top-300 selection, which is matched and
# supervised like every decoder layer (as the release does with two-stage Deformable DETR's encoder
# output). Denoising is off, as in DisCo pre-training.
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "dfine")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_dfine"
