# configs/detreg_deformable_ms.py's DETReg settings around the tiny detector of tiny_cond.py (frozen, 12
# queries, num_classes=1), 4 proposals per view, 64-96 px views, 32-px crops, the demo's unlabelled split with
# selective-search proposals.
import os

from detectron2.config import LazyConfig

_here = os.path.dirname(__file__)
_detreg = LazyConfig.load(os.path.join(_here, "..", "..", "configs", "detreg_deformable_ms.py"))
_tiny = LazyConfig.load(os.path.join(_here, "tiny_cond.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _detreg.model, _detreg.dataloader, _tiny.optimizer, _tiny.train, _tiny.lr_multiplier,
)

model.detector = _tiny.model
model.detector.num_classes = 1
model.detector.criterion = None
model.detector.num_queries = 12
model.detector.backbone.freeze_at = 4  # all of the tiny ResNet
model.embedding_levels = ("res4",)
train.require_backbone_weights = False  # tests pre-train against the tiny random backbone on purpose

dataloader.train.dataset.names = "disco_demo_unlabelled_ss"
dataloader.train.mapper.update(scales=(64, 80), max_size=120, crop_resize_sizes=(80, 96), crop_size_range=(64, 96),
                               crop_size=32, num_proposals=4)
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
train.max_iter = 4
train.output_dir = "./output/test_tiny_detreg"
