# Siamese DETR baseline for DAB-DETR: fixed query groups (query i gets proposal floor(i / (N / n))), the other
# view's object feature *added* to the content query (as DisCo does), the field DAB-DETR takes fused features in, no CLD.
# Everything else as configs/disco_dab.py.
from .disco_dab import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_dab"
