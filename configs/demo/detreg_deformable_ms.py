# CPU demo: DETReg pre-training of configs/demo/deformable_ms.py (strides 8/16/32), with
# configs/demo/detreg_cond.py's data and schedule, the demo Deformable DETR's optimiser and the DisCo preset's
# 150 iterations (configs/demo/disco_deformable_ms.py).
from .deformable_ms import model as _detector
from .deformable_ms import optimizer, train
from .detreg_cond import dataloader, lr_multiplier, model

_detector.num_classes = 1
_detector.criterion = None

model.detector = _detector
train.max_iter = 150
train.epochs = None
train.checkpointer.period = 150
train.eval_period = 0
train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
train.output_dir = "./output/demo_deformable_ms/pretrain_detreg"
