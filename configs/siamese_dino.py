# Siamese DETR baseline (fixed query groups, additive fusion, no CLD) around DINO 4-scale R50-vd.
from .disco_dino import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_dino"
