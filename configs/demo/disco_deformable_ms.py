# CPU demo: DisCo DETR pre-training of configs/demo/deformable_ms.py with the paper's DisCo settings for
# Deformable DETR (configs/disco_deformable_ms.py) and the demo's pre-training data and schedule
# (configs/common/pretrain.py).
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ms", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo_deformable_ms/pretrain_disco"
