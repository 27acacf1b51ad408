# CPU demo: DETReg pre-training of configs/demo/deformable_ss.py, with configs/demo/detreg_cond.py's data and
# schedule, the demo Deformable DETR's optimiser and the DisCo preset's 150 iterations
# (configs/demo/disco_deformable_ss.py).
from ..common.pretrain import demo_detreg_pretraining
from .deformable_ss import model as _detector
from .deformable_ss import optimizer, train

_detector.backbone.out_features = ("stride8", "stride16")  # the detector reads stride16; stride8: the targets
dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train, max_iter=150)
train.output_dir = "./output/demo_deformable_ss/pretrain_detreg"
