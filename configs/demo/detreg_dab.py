# CPU demo: DETReg pre-training of the demo DAB-DETR (configs/demo/dab.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and the release's DETReg settings.
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "dab", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_detreg_dab"
