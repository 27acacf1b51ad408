# CPU demo: DETReg pre-training of configs/demo/deformable_ss.py, with configs/demo/detreg_cond.py's data and
# schedule, the demo Deformable DETR's optimiser and the DisCo preset's 150 iterations
# (configs/demo/disco_deformable_ss.py).
from ..common.pretrain import pretraining

_cfg = pretraining("detreg", "deformable_ss", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo_deformable_ss/pretrain_detreg"
