# The demo config shrunk for CPU tests: a tiny ResNet trained from scratch (FrozenBN, so
# batch statistics cannot make one process differ from two), d=32, 1+2 layers, 12 queries,
# 80-96 px images, no pre-trained weights.
import os

from detectron2.config import LazyConfig

from disco_detr.variants import VARIANTS as _VARIANTS

_demo = LazyConfig.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo", "cond.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _demo.model, _demo.dataloader, _demo.optimizer, _demo.train, _demo.lr_multiplier,
)

_VARIANTS["cond"].shrink(model)  # tiny ResNet (res4), d=32, 4 heads, 1+2 layers, 12 queries

dataloader.train.mapper.update(min_sizes=(80, 96), crop_resize_sizes=(80, 96), crop_size=(64, 90))
dataloader.test.mapper.update(min_sizes=(96,))
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.params.backbone_lr_factor = 1.0
train.init_checkpoint = ""
train.device = "cpu"
train.log_period = 1
