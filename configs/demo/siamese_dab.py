# CPU demo: the Siamese DETR baseline of configs/demo/disco_dab.py (fixed query groups, additive fusion into
# the content query, no CLD), as configs/siamese_dab.py.
from ..common.pretrain import demo_disco_pretraining
from .cond import optimizer, train
from .dab import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, ("stride16",), "dab", optimizer, train)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese_dab"
