# CPU demo: the Siamese DETR baseline of configs/demo/disco_cond.py (fixed query groups, additive
# fusion, no CLD), as configs/siamese_cond.py.
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese"
