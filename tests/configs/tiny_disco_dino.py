# configs/disco_dino.py shrunk for CPU tests: tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px views, 32-px
# crops, the demo's unlabelled split) with its detector replaced by the paper's DINO on the tiny frozen ResNet
# (res2-res4, strides 4/8/16, + one extra level), d=32, 4 heads, 2 points, 1+2 layers, 12 selected queries.
import os

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.modeling import build_tiny_resnet

_here = os.path.dirname(__file__)
_tiny = LazyConfig.load(os.path.join(_here, "tiny_disco.py"))
_dino = LazyConfig.load(os.path.join(_here, "..", "..", "configs", "disco_dino.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _tiny.model, _tiny.dataloader, _tiny.optimizer, _tiny.train, _tiny.lr_multiplier,
)
FEATURES = ("res2", "res3", "res4")

model.detector = _dino.model.detector
model.detector.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                               out_features=FEATURES, norm="FrozenBN", freeze_at=4)
model.detector.in_features = FEATURES
model.detector.norm_groups = 8
for _part, _layers in ((model.detector.encoder, 1), (model.detector.decoder, 2)):
    _part.update(num_layers=_layers, d_model=32, num_heads=4, dim_feedforward=64, num_points=2)
model.detector.num_queries = 12
model.feature_levels = FEATURES
model.enc_hidden = 32
model.weight_rec = _dino.model.weight_rec
model.weight_contrast = _dino.model.weight_contrast
train.output_dir = "./output/test_tiny_disco_dino"
