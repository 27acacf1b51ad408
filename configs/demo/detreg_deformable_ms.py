# CPU demo: DETReg pre-training of configs/demo/deformable_ms.py (strides 8/16/32), with
# configs/demo/detreg_cond.py's data and schedule, the demo Deformable DETR's optimiser and the DisCo preset's
# 150 iterations (configs/demo/disco_deformable_ms.py).
from ..common.pretrain import demo_detreg_pretraining
from .deformable_ms import model as _detector
from .deformable_ms import optimizer, train

dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train, max_iter=150)
train.output_dir = "./output/demo_deformable_ms/pretrain_detreg"
