# CPU demo: DETReg pre-training of the demo D-FINE (configs/demo/dfine.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_dfine.py's choices (no denoising; the encoder's selection is
# supervised as a layer).
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "dfine", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_detreg_dfine"
