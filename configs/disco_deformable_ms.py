# DisCo DETR pre-training of multi-scale Deformable DETR R50 (res3-res5 + a stride-64 level):
# Table 3 row (c), VOC 50.2: DMOQF + CLD with lambda_3 = 5 (the table's value for this row).
# Object features: RoIAlign 7x7 on the stride 8/16/32 maps, pooled and concatenated (512 +
# 1024 + 2048 channels); crop features the same pooled levels.
from .common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ms")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_deformable_ms"
