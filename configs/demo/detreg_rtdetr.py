# CPU demo: DETReg pre-training of the demo RT-DETR (configs/demo/rtdetr.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_rtdetr.py's choices (no denoising; the encoder's selection is
# supervised as a layer).
from .detreg_cond import dataloader, lr_multiplier, model, optimizer, train
from .rtdetr import model as _detector

_detector.num_classes = 1
_detector.criterion = None
_detector.num_denoising = 0

model.detector = _detector
train.output_dir = "./output/demo/pretrain_detreg_rtdetr"
