# Table 3 (a), Deformable-MS (VOC 49.8): DMOQF on, CLD off (the table's lambda_3 column says 1
# for this row; with CLD off it has no effect).
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ms")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

model.weight_contrast = 0.0
train.output_dir = "./output/disco_deformable_ms_dmoqf_only"
