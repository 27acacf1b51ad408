# CPU demo: DisCo DETR pre-training of configs/demo/deformable_ss.py with the paper's DisCo settings for
# Deformable DETR (configs/disco_deformable_ss.py) and the demo's pre-training data and schedule
# (configs/common/pretrain.py).
from ..common.pretrain import demo_disco_pretraining
from .deformable_ss import model as _detector
from .deformable_ss import optimizer, train

dataloader, lr_multiplier, model, optimizer, train = demo_disco_pretraining(
    _detector, ("stride16",), "deformable_ss", optimizer, train, max_iter=150)
train.output_dir = "./output/demo_deformable_ss/pretrain_disco"
