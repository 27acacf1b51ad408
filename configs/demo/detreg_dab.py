# CPU demo: DETReg pre-training of the demo DAB-DETR (configs/demo/dab.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and the release's DETReg settings.
from .dab import model as _detector
from .detreg_cond import dataloader, lr_multiplier, model, optimizer, train

_detector.num_classes = 1
_detector.criterion = None
_detector.backbone.out_features = ("stride8", "stride16")

model.detector = _detector
train.output_dir = "./output/demo/pretrain_detreg_dab"
