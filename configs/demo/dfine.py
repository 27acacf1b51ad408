# CPU demo: fine-tune a small D-FINE on the generated demo data (python tools/make_demo_data.py --out
# datasets/demo): configs/demo/rtdetr.py's sizes (frozen ImageNet MobileNetV2 at strides 8/16/32, d=128, 3 decoder
# layers, 30 queries, 30 denoising queries, EMA on, 160-px images, 1200 iterations of 8 images) with the D-FINE
# detector of configs/common/models/d_fine_r50vd.py (GELAN fusion, distribution refinement, LQE, FGL + DDF).
from detectron2.config import LazyCall as L

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.modeling import MobileNetV2Backbone

from ..common.models.d_fine_r50vd import model
from .cond import dataloader, lr_multiplier, optimizer, train

D_MODEL = 128
FEATURES = ("stride8", "stride16", "stride32")

# frozen (all 19 blocks up to stride 32): ImageNet features, and no backbone backward on the CPU
model.backbone = L(MobileNetV2Backbone)(out_features=FEATURES, freeze_at=19)
model.in_features = FEATURES
model.encoder.in_channels = (32, 96, 1280)  # MobileNetV2 at strides 8/16/32
model.encoder.d_model = D_MODEL
model.encoder.dim_feedforward = 4 * D_MODEL
model.encoder.expansion = 0.5
model.encoder.depth_mult = 1 / 3  # one RepVGG block per CSPRep branch
model.decoder.d_model = D_MODEL
model.decoder.dim_feedforward = 4 * D_MODEL
model.decoder.num_layers = 3
model.num_classes = len(DEMO_CLASSES)
model.num_queries = 30
model.num_denoising = 30  # scaled with the query count (paper: 100 for 300 queries)
model.num_detections = 100

train.ema.enabled = True
train.ema.warmups = 100  # scaled to the demo's 1200 iterations (release: 2000 of ~160k)
train.output_dir = "./output/demo/finetune_dfine"
