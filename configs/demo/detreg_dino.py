# CPU demo: DETReg pre-training of the demo DINO (configs/demo/dino.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and configs/detreg_dino.py's choices (no denoising; the encoder heads are
# supervised like a decoder layer).
from ..common.pretrain import demo_detreg_pretraining
from .cond import optimizer, train
from .dino import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train)
train.output_dir = "./output/demo/pretrain_detreg_dino"
