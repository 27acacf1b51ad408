# CPU demo: DisCo DETR pre-training of configs/demo/deformable_ms.py with the paper's DisCo settings for
# Deformable DETR (configs/disco_deformable_ms.py) and the demo's pre-training data and schedule
# (configs/demo/disco_cond.py).
from ..disco_deformable_ms import model
from .deformable_ms import model as _detector
from .deformable_ms import optimizer, train
from .disco_cond import dataloader, lr_multiplier

_detector.num_classes = 2  # object / no-object
_detector.criterion = None

model.detector = _detector
model.feature_levels = ("stride8", "stride16", "stride32")
train.max_iter = 150
train.epochs = None
train.checkpointer.period = 150
train.eval_period = 0
train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
train.output_dir = "./output/demo_deformable_ms/pretrain_disco"
