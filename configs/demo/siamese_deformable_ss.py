# CPU demo: the Siamese DETR baseline of configs/demo/disco_deformable_ss.py (fixed query groups,
# additive fusion, no CLD).
from ..common.pretrain import demo_disco_pretraining
from .deformable_ss import model as _detector
from .deformable_ss import optimizer, train

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, ("stride16",), "deformable_ss", optimizer, train, max_iter=150)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo_deformable_ss/pretrain_siamese"
