# Siamese DETR baseline around RT-DETR R50-vd (fixed query groups, additive fusion, no CLD), with
# configs/disco_rtdetr.py's detector, features, data and schedule.
from .disco_rtdetr import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_rtdetr"
