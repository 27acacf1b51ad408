# CPU demo: the Siamese DETR baseline of configs/demo/disco_dab.py (fixed query groups, additive fusion into
# the content query, no CLD), as configs/siamese_dab.py.
from .disco_dab import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese_dab"
