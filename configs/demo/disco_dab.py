# CPU demo: DisCo DETR pre-training of the demo DAB-DETR (configs/demo/dab.py: frozen ImageNet MobileNetV2,
# d=128, 3+3 layers, 30 anchor queries -> 3 queries per box with n = 10) on the demo's unlabelled images,
# with configs/demo/disco_cond.py's data, budget and schedule and configs/disco_dab.py's DisCo settings.
from ..disco_dab import model  # the paper's DisCo settings for DAB-DETR, around the demo detector
from .dab import model as _detector
from .disco_cond import dataloader, lr_multiplier, optimizer, train

_detector.num_classes = 2  # object / no-object
_detector.criterion = None

model.detector = _detector
model.feature_levels = ("stride16",)
train.output_dir = "./output/demo/pretrain_disco_dab"
