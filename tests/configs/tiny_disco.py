# configs/disco_cond.py shrunk for CPU tests: the tiny detector of tiny_cond.py (frozen, 12 queries),
# n = 4 boxes, 64-96 px views, 32-px crops, the demo's unlabelled split.
import os

from detectron2.config import LazyConfig

_here = os.path.dirname(__file__)
_disco = LazyConfig.load(os.path.join(_here, "..", "..", "configs", "disco_cond.py"))
_tiny = LazyConfig.load(os.path.join(_here, "tiny_cond.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _disco.model, _disco.dataloader, _disco.optimizer, _tiny.train, _tiny.lr_multiplier,
)

model.detector = _tiny.model
model.detector.num_classes = 2
model.detector.criterion = None
model.detector.num_queries = 12
model.detector.backbone.freeze_at = 4  # stem + res2..res4: all of the tiny ResNet
model.feature_levels = ("res4",)
model.enc_hidden = 32
train.require_backbone_weights = False  # tests pre-train against the tiny random backbone on purpose

dataloader.train.dataset.names = "disco_demo_unlabelled"
dataloader.train.mapper.update(min_sizes=(64, 80, 96), max_size=128, num_boxes=4, crop_size=32)
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
train.max_iter = 4
train.output_dir = "./output/test_tiny_disco"
