# CPU demo: DisCo DETR pre-training of configs/demo/deformable_ss.py with the paper's DisCo settings for
# Deformable DETR (configs/disco_deformable_ss.py) and the demo's pre-training data and schedule
# (configs/common/pretrain.py).
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ss", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo_deformable_ss/pretrain_disco"
