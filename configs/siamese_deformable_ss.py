# Siamese DETR baseline for single-scale Deformable DETR: fixed query groups, additive fusion
# into the positional query (as Siamese DETR's release does for Deformable DETR), no CLD.
from .disco_deformable_ss import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_deformable_ss"
