# CPU demo: fine-tune a small Conditional DETR on the generated demo data
# (python tools/make_demo_data.py --out datasets/demo). 160-px images, a frozen ImageNet
# MobileNetV2 backbone at stride 16 (python tools/prepare_demo_backbone.py), d=128,
# 3+3 transformer layers, 30 queries, 1200 iterations of 8 images (16 epochs).
# Same detector class and losses as the paper configs, only smaller. See README for timings.
from detectron2.config import LazyCall as L

from disco_detr.data.datasets import DEMO_CLASSES
from disco_detr.modeling import MobileNetV2Backbone

from ..common.data.detr_detection import dataloader
from ..common.models.conditional_detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step_schedule
from ..common.train import train

D_MODEL = 128

# frozen (all 14 blocks up to stride 16): ImageNet features, and no backbone backward on the CPU
model.backbone = L(MobileNetV2Backbone)(out_features=("stride16",), freeze_at=14)
model.in_feature = "stride16"
for _part in (model.encoder, model.decoder):
    _part.d_model = D_MODEL
    _part.dim_feedforward = 4 * D_MODEL
    _part.dropout = 0.0  # dropout's random masks cost ~30% of a CPU step; the demo does without
    _part.num_layers = 3
model.num_classes = len(DEMO_CLASSES)
model.num_queries = 30
model.num_detections = 100

dataloader.train.dataset.names = "disco_demo_train"
dataloader.test.dataset.names = "disco_demo_val"
dataloader.train.mapper.update(min_sizes=(128, 144, 160, 176), max_size=300,
                               crop_resize_sizes=(120, 140, 160), crop_size=(96, 150))
dataloader.test.mapper.update(min_sizes=(160,), max_size=300)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.num_workers = 0
dataloader.test.batch_size = 8  # evaluation in batches of 8 (all val images are 160 x 160: no padding)

optimizer.lr = 3e-4
train.init_checkpoint = "datasets/weights/mobilenet_v2_imagenet.pth"
train.max_iter = 1200
train.amp.enabled = False
train.eval_period = 0
train.checkpointer.period = 400
train.log_period = 20
train.output_dir = "./output/demo/finetune"
lr_multiplier = step_schedule(drop_fraction=0.8, warmup_fraction=0.02)
