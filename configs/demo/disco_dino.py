# CPU demo: DisCo DETR pre-training of the demo DINO (configs/demo/dino.py: frozen ImageNet MobileNetV2 at
# strides 8/16/32, d=128, 3+3 layers, 30 queries selected from the encoder -> 3 per box with n = 10) on the
# demo's unlabelled images, with the demo's pre-training data, budget and schedule and
# configs/disco_dino.py's DisCo settings (no denoising in pre-training).
from ..common.pretrain import demo_disco_pretraining
from .cond import optimizer, train
from .dino import FEATURES
from .dino import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, FEATURES, "dino", optimizer, train)
train.output_dir = "./output/demo/pretrain_disco_dino"
