# configs/disco_dfine.py shrunk for CPU tests: tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px views, 32-px
# crops, the demo's unlabelled split) with its detector replaced by the paper's D-FINE on the tiny frozen ResNet
# (res2-res4, strides 4/8/16), d=32, 4 heads, (2, 3, 2) points, 1 RepVGG block per CSP branch, 2 decoder layers,
# 12 selected queries.
from tiny_detectors import tiny_pretraining

_cfg = tiny_pretraining("dfine")
model = _cfg.model
dataloader = _cfg.dataloader
optimizer = _cfg.optimizer
train = _cfg.train
lr_multiplier = _cfg.lr_multiplier
