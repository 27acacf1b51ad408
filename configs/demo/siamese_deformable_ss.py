# CPU demo: the Siamese DETR baseline of configs/demo/disco_deformable_ss.py (fixed query groups,
# additive fusion, no CLD).
from .disco_deformable_ss import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo_deformable_ss/pretrain_siamese"
