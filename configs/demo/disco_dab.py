# CPU demo: DisCo DETR pre-training of the demo DAB-DETR (configs/demo/dab.py: frozen ImageNet MobileNetV2,
# d=128, 3+3 layers, 30 anchor queries -> 3 queries per box with n = 10) on the demo's unlabelled images,
# with the demo's pre-training data, budget and schedule and configs/disco_dab.py's DisCo settings.
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "dab", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_disco_dab"
