# CPU demo: the Siamese DETR baseline of configs/demo/disco_deformable_ms.py (fixed query groups,
# additive fusion, no CLD).
from ..common.pretrain import demo_disco_pretraining
from .deformable_ms import FEATURES, optimizer, train
from .deformable_ms import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, FEATURES, "deformable_ms", optimizer, train, max_iter=150)
model.use_dmoqf = False
model.weight_contrast = 0.0
train.output_dir = "./output/demo_deformable_ms/pretrain_siamese"
