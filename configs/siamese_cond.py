# Siamese DETR baseline: DisCo DETR with both components off (fixed query groups instead
# of DMOQF, no CLD).
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_cond"
