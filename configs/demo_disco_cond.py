# CPU demo: DisCo DETR pre-training of the demo detector (configs/demo_cond.py: frozen
# ImageNet MobileNetV2, d=128, 3+3 layers, 30 queries -> 3 queries per box with n = 10) on
# the demo's 300 unlabelled images with their EdgeBoxes proposals. Views are made from a
# 128-160 px resize (the paper: 320-480) and crops are 64 px (the paper: 128) to fit a CPU.
from detectron2.config import LazyCall as L

from disco_detr.modeling.pretrain.disco import DisCoDETR

from .common.data.pretrain import dataloader
from .common.schedule import step_schedule
from .demo_cond import model as _detector
from .demo_cond import optimizer, train

_detector.num_classes = 2  # object / no-object
_detector.criterion = None

model = L(DisCoDETR)(
    detector=_detector,
    feature_levels=("stride16",),
    use_dmoqf=True,
    fusion="mlp",
    weight_loc=1.0,
    weight_rec=5.0,
    weight_enc=10.0,
    weight_contrast=2.0,
    enc_hidden=256,
)

dataloader.train.dataset.names = "disco_demo_unlabelled"
dataloader.train.mapper.update(min_sizes=(128, 144, 160), max_size=240, crop_size=64)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
optimizer.lr = 3e-4
train.max_iter = 150  # tools/run_demo.py uses the same budget
train.checkpointer.period = 150
train.eval_period = 0
train.output_dir = "./output/demo/pretrain_disco"
lr_multiplier = step_schedule(drop_fraction=2 / 3, warmup_fraction=0.02)
