# CPU demo: DisCo DETR pre-training of the demo detector (configs/demo/cond.py: frozen
# ImageNet MobileNetV2, d=128, 3+3 layers, 30 queries -> 3 queries per box with n = 10) on
# the demo's 300 unlabelled images with their EdgeBoxes proposals. Views are made from a
# 128-160 px resize (the paper: 320-480) and crops are 64 px (the paper: 128) to fit a CPU.
from ..common.schedule import step_schedule
from ..disco_cond import dataloader, model  # the paper's DisCo settings, around the demo detector
from .cond import model as _detector
from .cond import optimizer, train

_detector.num_classes = 2  # object / no-object
_detector.criterion = None

model.detector = _detector
model.feature_levels = ("stride16",)

dataloader.train.dataset.names = "disco_demo_unlabelled"
dataloader.train.mapper.update(min_sizes=(128, 144, 160), max_size=240, crop_size=64,
                               # on a CPU the data worker overlaps with the step: colour augmentation and
                               # crops stay in the worker (the same distribution as the device path)
                               photometric="cpu", crops_on_device=False)
dataloader.batch_transform = None  # nothing left to the device
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
optimizer.lr = 3e-4
# 50 iterations: chosen from the budget study (README, "Budget study"); tools/run_demo.py
# (make demo) uses the same budget through --pretrain-iters
train.max_iter = 50
train.epochs = None
train.checkpointer.period = 50
train.eval_period = 0
train.require_backbone_weights = True  # the demo backbone's weights come from train.init_checkpoint
train.output_dir = "./output/demo/pretrain_disco"
lr_multiplier = step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02)
