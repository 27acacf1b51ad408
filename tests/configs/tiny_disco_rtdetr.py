# configs/disco_rtdetr.py shrunk for CPU tests: tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px views, 32-px
# crops, the demo's unlabelled split) with its detector replaced by the paper's RT-DETR on the tiny frozen ResNet
# (res2-res4, strides 4/8/16), d=32, 4 heads, 2 points, 1 RepVGG block per CSPRep layer, 2 decoder layers,
# 12 selected queries.
import os

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.modeling import build_tiny_resnet

_here = os.path.dirname(__file__)
_tiny = LazyConfig.load(os.path.join(_here, "tiny_disco.py"))
_rtdetr = LazyConfig.load(os.path.join(_here, "..", "..", "configs", "disco_rtdetr.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _tiny.model, _tiny.dataloader, _tiny.optimizer, _tiny.train, _tiny.lr_multiplier,
)
FEATURES = ("res2", "res3", "res4")

model.detector = _rtdetr.model.detector
model.detector.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                               out_features=FEATURES, norm="FrozenBN", freeze_at=4)
model.detector.in_features = FEATURES
model.detector.encoder.update(in_channels=(8, 16, 32), d_model=32, num_heads=4, dim_feedforward=64, depth_mult=1 / 3)
model.detector.decoder.update(num_layers=2, d_model=32, num_heads=4, dim_feedforward=64, num_points=2)
model.detector.num_queries = 12
model.feature_levels = FEATURES
model.enc_hidden = 32
model.weight_rec = _rtdetr.model.weight_rec
model.weight_contrast = _rtdetr.model.weight_contrast
train.output_dir = "./output/test_tiny_disco_rtdetr"
