# CPU demo: fine-tune a small DINO on the generated demo data (python tools/make_demo_data.py
# --out datasets/demo): configs/demo/cond.py's setting (160-px images, 1200 iterations of 8 images) with the
# DINO detector of the paper configs, only smaller: frozen ImageNet MobileNetV2 (tools/prepare_demo_backbone.py)
# at strides 8/16/32 + one stride-64 level, d=128, 3+3 layers, 30 queries, 30 denoising queries.
from detectron2.config import LazyCall as L

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.modeling import MobileNetV2Backbone

from ..common.models.dino_r50 import model
from .cond import dataloader, lr_multiplier, optimizer, train

D_MODEL = 128
FEATURES = ("stride8", "stride16", "stride32")

# frozen (all 19 blocks up to stride 32): ImageNet features, and no backbone backward on the CPU
model.backbone = L(MobileNetV2Backbone)(out_features=FEATURES, freeze_at=19)
model.in_features = FEATURES
for _part in (model.encoder, model.decoder):
    _part.d_model = D_MODEL
    _part.dim_feedforward = 4 * D_MODEL
    _part.num_layers = 3
model.num_classes = len(DEMO_CLASSES)
model.num_queries = 30
model.num_denoising = 30  # scaled with the query count (paper: 100 for 900 queries)
model.num_detections = 100

train.output_dir = "./output/demo/finetune_dino"
