# Table 3 (b), Deformable-MS (VOC 49.6): CLD on (lambda_3 = 2), DMOQF off (Siamese DETR's fixed
# groups and additive fusion).
from ..common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ms")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

model.use_dmoqf = False
model.weight_contrast = 2.0
train.output_dir = "./output/disco_deformable_ms_cld_only"
