# CPU demo: DisCo DETR pre-training of the demo RT-DETR (configs/demo/rtdetr.py: frozen ImageNet MobileNetV2 at
# strides 8/16/32, d=128, 3 decoder layers, 30 queries selected from the encoder -> 3 per box with n = 10) on
# the demo's unlabelled images, with configs/demo/disco_cond.py's data, budget and schedule and
# configs/disco_rtdetr.py's DisCo settings (lambda_0 = 3, stride 8/16/32 features, no denoising).
from ..disco_rtdetr import model  # the paper's DisCo settings for RT-DETR, around the demo detector
from .disco_cond import dataloader, lr_multiplier, optimizer, train
from .rtdetr import FEATURES
from .rtdetr import model as _detector

_detector.num_classes = 2  # object / no-object
_detector.criterion = None
_detector.num_denoising = 0

model.detector = _detector
model.feature_levels = FEATURES
train.output_dir = "./output/demo/pretrain_disco_rtdetr"
