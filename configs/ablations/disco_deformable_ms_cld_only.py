# Table 3 (b), Deformable-MS (VOC 49.6): CLD on (lambda_3 = 2), DMOQF off (Siamese DETR's fixed
# groups and additive fusion).
from ..disco_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 2.0
train.output_dir = "./output/disco_deformable_ms_cld_only"
