# configs/disco_dab.py shrunk for CPU tests: tests/configs/tiny_disco.py (n = 4 boxes, 64-96 px views, 32-px
# crops, the demo's unlabelled split) with its detector replaced by the paper's DAB-DETR on the tiny frozen
# ResNet (res4, stride 16), d=32, 4 heads, 1+2 layers, 12 anchor queries.
import os

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from disco_detr.modeling import build_tiny_resnet

_here = os.path.dirname(__file__)
_tiny = LazyConfig.load(os.path.join(_here, "tiny_disco.py"))
_dab = LazyConfig.load(os.path.join(_here, "..", "..", "configs", "disco_dab.py"))
model, dataloader, optimizer, train, lr_multiplier = (
    _tiny.model, _tiny.dataloader, _tiny.optimizer, _tiny.train, _tiny.lr_multiplier,
)

model.detector = _dab.model.detector
model.detector.backbone = L(build_tiny_resnet)(widths=(8, 16, 32), blocks=(1, 1, 1), stem_width=8,
                                               out_features=("res4",), norm="FrozenBN", freeze_at=4)
model.detector.in_feature = "res4"
for _part, _layers in ((model.detector.encoder, 1), (model.detector.decoder, 2)):
    _part.update(num_layers=_layers, d_model=32, num_heads=4, dim_feedforward=64)
model.detector.num_queries = 12
model.weight_rec = _dab.model.weight_rec
train.output_dir = "./output/test_tiny_disco_dab"
