# CPU demo: the Siamese DETR baseline of configs/demo/disco_dino.py (fixed query groups, additive fusion,
# no CLD), as configs/siamese_dino.py.
from ..common.pretrain import demo_disco_pretraining
from .cond import optimizer, train
from .dino import FEATURES
from .dino import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, FEATURES, "dino", optimizer, train)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.ddp.find_unused_parameters = True  # the encoder heads get no gradient in pre-training
train.output_dir = "./output/demo/pretrain_siamese_dino"
