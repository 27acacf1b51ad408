# DisCo DETR pre-training of multi-scale Deformable DETR R50 (res3-res5 + a stride-64 level):
# Table 3 row (c), VOC 50.2: DMOQF + CLD with lambda_3 = 5 (the table's value for this row).
# Object features: RoIAlign 7x7 on the stride 8/16/32 maps, pooled and concatenated (512 +
# 1024 + 2048 channels); crop features the same pooled levels.
from .common.models.deformable_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "deformable_ms")
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/disco_deformable_ms"
