# CPU demo: DETReg pre-training of the demo DAB-DETR (configs/demo/dab.py), with configs/demo/detreg_cond.py's
# data, budget and schedule and the release's DETReg settings.
from ..common.pretrain import demo_detreg_pretraining
from .cond import optimizer, train
from .dab import model as _detector

_detector.backbone.out_features = ("stride8", "stride16")  # the detector reads stride16; stride8: the targets
dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train)
train.output_dir = "./output/demo/pretrain_detreg_dab"
