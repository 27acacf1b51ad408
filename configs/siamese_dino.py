# Siamese DETR baseline (fixed query groups, additive fusion, no CLD) around DINO 4-scale R50-vd.
from .common.models.dino_r50 import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "dino")
model.use_dmoqf = False
model.weight_contrast = 0.0
train.ddp.find_unused_parameters = True  # the encoder heads get no gradient in pre-training
train.output_dir = "./output/siamese_dino"
