# Table 3, Deformable-MS baseline (VOC 48.7): Siamese DETR (fixed query groups, additive
# fusion, no CLD) around multi-scale Deformable DETR.
from .disco_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_deformable_ms"
