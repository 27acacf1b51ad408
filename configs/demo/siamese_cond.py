# CPU demo: the Siamese DETR baseline of configs/demo/disco_cond.py (fixed query groups, additive
# fusion, no CLD), as configs/siamese_cond.py.
from ..common.pretrain import demo_disco_pretraining
from .cond import model as _detector
from .cond import optimizer, train

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, ("stride16",), "cond", optimizer, train)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo/pretrain_siamese"
