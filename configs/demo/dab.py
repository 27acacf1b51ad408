# CPU demo: fine-tune a small DAB-DETR on the generated demo data (python tools/make_demo_data.py
# --out datasets/demo): configs/demo/cond.py's setting (160-px images, frozen ImageNet MobileNetV2 at
# stride 16 from tools/prepare_demo_backbone.py, d=128, 3+3 layers, 30 queries, 1200 iterations of 8 images)
# with the DAB-DETR detector of the paper configs, only smaller.
from detectron2.config import LazyCall as L

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.modeling import MobileNetV2Backbone

from ..common.models.dab_detr_r50 import model
from .cond import dataloader, lr_multiplier, optimizer, train

D_MODEL = 128

# frozen (all 14 blocks up to stride 16): ImageNet features, and no backbone backward on the CPU
model.backbone = L(MobileNetV2Backbone)(out_features=("stride16",), freeze_at=14)
model.in_feature = "stride16"
for _part in (model.encoder, model.decoder):
    _part.d_model = D_MODEL
    _part.dim_feedforward = 4 * D_MODEL
    _part.dropout = 0.0
    _part.num_layers = 3
model.num_classes = len(DEMO_CLASSES)
model.num_queries = 30
model.num_detections = 100

train.output_dir = "./output/demo/finetune_dab"
