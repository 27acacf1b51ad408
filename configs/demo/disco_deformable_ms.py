# CPU demo: DisCo DETR pre-training of configs/demo/deformable_ms.py with the paper's DisCo settings for
# Deformable DETR (configs/disco_deformable_ms.py) and the demo's pre-training data and schedule
# (configs/common/pretrain.py).
from ..common.pretrain import demo_disco_pretraining
from .deformable_ms import FEATURES, optimizer, train
from .deformable_ms import model as _detector

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, FEATURES, "deformable_ms", optimizer, train, max_iter=150)
train.output_dir = "./output/demo_deformable_ms/pretrain_disco"
