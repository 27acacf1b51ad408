# configs/disco_dab.py shrunk for CPU tests: tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px views, 32-px
# crops, the demo's unlabelled split) with its detector replaced by the paper's DAB-DETR on the tiny frozen
# ResNet (res4, stride 16), d=32, 4 heads, 1+2 layers, 12 anchor queries.
from tiny_detectors import tiny_pretraining

_cfg = tiny_pretraining("dab")
model = _cfg.model
dataloader = _cfg.dataloader
optimizer = _cfg.optimizer
train = _cfg.train
lr_multiplier = _cfg.lr_multiplier
