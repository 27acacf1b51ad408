# CPU demo: DETReg pre-training of the demo RT-DETR (configs/demo/rtdetr.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_rtdetr.py's choices (no denoising; the encoder's selection is
# supervised as a layer).
from ..common.pretrain import demo_detreg_pretraining
from .cond import optimizer, train
from .rtdetr import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train)
train.output_dir = "./output/demo/pretrain_detreg_rtdetr"
