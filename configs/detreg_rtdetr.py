# DETReg pre-training of RT-DETR R50-vd (300 queries from IoU-aware selection), with
# the release's DETReg settings, data, optimiser and schedule (configs/common/pretrain.py); C3 targets.
# In training RT-DETR's decoder output starts with its encoder's top-300 selection, which is matched and
# supervised like every decoder layer (as the release does with two-stage Deformable DETR's encoder
# output). Denoising is off, as in DisCo pre-training.
from .common.models.rt_detr_r50vd import model as _detector
from .common.pretrain import detreg_pretraining

dataloader, lr_multiplier, model, optimizer, train = detreg_pretraining(_detector)
train.output_dir = "./output/detreg_rtdetr"
