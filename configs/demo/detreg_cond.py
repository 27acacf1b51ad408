# CPU demo: DETReg pre-training of the demo detector (configs/demo/cond.py: frozen ImageNet MobileNetV2, d=128,
# 3+3 layers, 30 queries) on the demo's 300 unlabelled images with their selective-search proposals, with the
# DETReg settings of configs/detreg_deformable_ms.py. Scaled to the demo as DisCo's preset is
# (configs/demo/disco_cond.py): views from a 128-160 px resize (the release: 320-480) or a resize to
# 140-200 -> crop 128-200 -> the same resize, 64-px crops (the release: 128), the first 10 proposals (the
# release: 30; 10 keeps 3 queries per box as DisCo's n = 10 does with 30 queries), embedding targets from the
# stride-8 stage (the release's C3 is stride 8 too). The same 50 iterations, batch and optimiser as the other
# demo pre-trainings.
from ..common.schedule import step_schedule
from ..detreg_deformable_ms import dataloader, model  # the release's DETReg settings, around the demo detector
from .cond import model as _detector
from .cond import optimizer, train

_detector.num_classes = 1  # every proposal is an "object"
_detector.criterion = None
_detector.backbone.out_features = ("stride8", "stride16")  # the detector reads stride16; stride8: the targets

model.detector = _detector
model.embedding_levels = ("stride8",)

dataloader.train.dataset.names = "disco_demo_unlabelled_ss"
dataloader.train.mapper.update(scales=(128, 144, 160), max_size=240, crop_resize_sizes=(140, 170, 200),
                               crop_size_range=(128, 200), crop_size=64, num_proposals=10)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
optimizer.lr = 3e-4
train.max_iter = 50  # the DisCo / Siamese demo budget (README, "Budget study"); make demo passes --pretrain-iters
train.epochs = None
train.checkpointer.period = 50
train.eval_period = 0
train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
train.output_dir = "./output/demo/pretrain_detreg"
lr_multiplier = step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02)
