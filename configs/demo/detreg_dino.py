# CPU demo: DETReg pre-training of the demo DINO (configs/demo/dino.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_dino.py's choices (no denoising; the encoder heads trained).
from .detreg_cond import dataloader, lr_multiplier, model, optimizer, train
from .dino import model as _detector

_detector.num_classes = 1
_detector.criterion = None
_detector.num_denoising = 0

model.detector = _detector
train.output_dir = "./output/demo/pretrain_detreg_dino"
