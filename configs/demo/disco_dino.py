# CPU demo: DisCo DETR pre-training of the demo DINO (configs/demo/dino.py: frozen ImageNet MobileNetV2 at
# strides 8/16/32, d=128, 3+3 layers, 30 queries selected from the encoder -> 3 per box with n = 10) on the
# demo's unlabelled images, with configs/demo/disco_cond.py's data, budget and schedule and
# configs/disco_dino.py's DisCo settings (no denoising in pre-training).
from ..disco_dino import model  # the paper's DisCo settings for DINO, around the demo detector
from .dino import model as _detector
from .disco_cond import dataloader, lr_multiplier, optimizer, train

_detector.num_classes = 2  # object / no-object
_detector.criterion = None
_detector.num_denoising = 0

model.detector = _detector
model.feature_levels = ("stride8", "stride16", "stride32")
train.output_dir = "./output/demo/pretrain_disco_dino"
