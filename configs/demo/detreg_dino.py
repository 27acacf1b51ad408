# CPU demo: DETReg pre-training of the demo DINO (configs/demo/dino.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_dino.py's choices (no denoising; the encoder heads are
# supervised like a decoder layer).
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "dino", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_detreg_dino"
