# CPU demo: DisCo DETR pre-training of the demo D-FINE (configs/demo/dfine.py: frozen ImageNet MobileNetV2 at
# strides 8/16/32, d=128, 3 decoder layers, 30 queries selected from the encoder -> 3 per box with n = 10) on
# the demo's unlabelled images, with the demo's pre-training data, budget and schedule and
# configs/disco_dfine.py's DisCo settings (lambda_0 = 3, stride 8/16/32 features, no denoising).
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "dfine", preset="demo")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/demo/pretrain_disco_dfine"
