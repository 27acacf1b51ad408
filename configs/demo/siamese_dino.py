# CPU demo: the Siamese DETR baseline of configs/demo/disco_dino.py (fixed query groups, additive fusion,
# no CLD), as configs/siamese_dino.py.
from .disco_dino import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese_dino"
