# The demo config shrunk for CPU tests: a tiny ResNet trained from scratch (FrozenBN, so
# batch statistics cannot make one process differ from two), d=32, 1+2 layers, 12 queries,
# 80-96 px images, no pre-trained weights.
import os

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.modeling import build_tiny_resnet

_demo = LazyConfig.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo", "cond.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _demo.model, _demo.dataloader, _demo.optimizer, _demo.train, _demo.lr_multiplier,
)

model.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                      out_features=("res4",), norm="FrozenBN")
model.in_feature = "res4"
for _part in (model.encoder, model.decoder):
    _part.d_model = 32
    _part.num_heads = 4
    _part.dim_feedforward = 64
model.encoder.num_layers = 1
model.decoder.num_layers = 2
model.num_queries = 12

dataloader.train.mapper.update(min_sizes=(80, 96), crop_resize_sizes=(80, 96), crop_size=(64, 90))
dataloader.test.mapper.update(min_sizes=(96,))
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.params.backbone_lr_factor = 1.0
train.init_checkpoint = ""
train.device = "cpu"
train.log_period = 1
