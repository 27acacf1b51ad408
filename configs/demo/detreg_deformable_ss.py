# CPU demo: DETReg pre-training of configs/demo/deformable_ss.py, with configs/demo/detreg_cond.py's data and
# schedule, the demo Deformable DETR's optimiser and the DisCo preset's 150 iterations
# (configs/demo/disco_deformable_ss.py).
from .deformable_ss import model as _detector
from .deformable_ss import optimizer, train
from .detreg_cond import dataloader, lr_multiplier, model

_detector.num_classes = 1
_detector.criterion = None
_detector.backbone.out_features = ("stride8", "stride16")

model.detector = _detector
train.max_iter = 150
train.epochs = None
train.checkpointer.period = 150
train.eval_period = 0
train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
train.output_dir = "./output/demo_deformable_ss/pretrain_detreg"
