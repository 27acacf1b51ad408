# CPU demo: fine-tune a small single-scale Deformable DETR (MobileNetV2 stride 16 only) on the demo data,
# with the data, optimizer and schedule of configs/demo/cond.py: frozen ImageNet MobileNetV2, d=128, 3+3 layers,
# 8 heads, 4 points, 30 queries; sampling offsets and reference points at lr x0.1 as in the paper configs.
from detectron2.config import LazyCall as L

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.modeling import MobileNetV2Backbone

from ..common.models.deformable_detr_r50 import model
from .cond import D_MODEL, dataloader, lr_multiplier, optimizer, train

FEATURES = ("stride16",)
model.backbone = L(MobileNetV2Backbone)(out_features=FEATURES, freeze_at=19)  # all blocks frozen
model.in_features = FEATURES
model.num_extra_levels = 0
for _part in (model.encoder, model.decoder):
    _part.update(d_model=D_MODEL, dim_feedforward=4 * D_MODEL, dropout=0.0, num_layers=3, num_levels=1)
model.num_classes = len(DEMO_CLASSES)
model.num_queries = 30
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/demo_deformable_ss/finetune"
