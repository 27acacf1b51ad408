# Siamese DETR baseline (Huang et al., CVPR 2023) as published: fixed, spatially random query
# groups (query i gets proposal floor(i / (N / n))), the other view's object feature *added*
# to the positional query (as DisCo does), no CLD. Everything else as configs/disco_cond.py.
from .common.models.conditional_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "cond")
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/siamese_cond"
