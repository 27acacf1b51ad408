# CPU demo: the Siamese DETR baseline of configs/demo/disco_rtdetr.py (fixed query groups, additive fusion,
# no CLD), as configs/siamese_rtdetr.py.
from ..common.pretrain import demo_disco_pretraining
from .cond import optimizer, train
from .rtdetr import FEATURES
from .rtdetr import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, FEATURES, "rtdetr", optimizer, train)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese_rtdetr"
