# CPU demo: DETReg pre-training of the demo detector (configs/demo/cond.py: frozen ImageNet MobileNetV2, d=128,
# 3+3 layers, 30 queries) on the demo's 300 unlabelled images with their selective-search proposals, with the
# release's DETReg settings (configs/common/pretrain.py). Scaled to the demo as DisCo's preset is
# (configs/demo/disco_cond.py): views from a 128-160 px resize (the release: 320-480) or a resize to
# 140-200 -> crop 128-200 -> the same resize, 64-px crops (the release: 128), the first 10 proposals (the
# release: 30; 10 keeps 3 queries per box as DisCo's n = 10 does with 30 queries), embedding targets from the
# stride-8 stage (the release's C3 is stride 8 too). The same 50 iterations, batch and optimiser as the other
# demo pre-trainings.
from ..common.pretrain import demo_detreg_pretraining
from .cond import model as _detector
from .cond import optimizer, train

_detector.backbone.out_features = ("stride8", "stride16")  # the detector reads stride16; stride8: the targets
dataloader, lr_multiplier, model, optimizer, train = demo_detreg_pretraining(_detector, optimizer, train)
train.output_dir = "./output/demo/pretrain_detreg"
