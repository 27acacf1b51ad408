# Siamese DETR baseline around RT-DETR R50-vd (fixed query groups, additive fusion, no CLD), with
# configs/disco_rtdetr.py's detector, features, data and schedule.
from .common.models.rt_detr_r50vd import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "rtdetr")
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_rtdetr"
