# Table 3 (Conditional DETR, VOC 51.14): CLD on (lambda_3 = 2), DMOQF off: Siamese DETR's fixed
# query groups (additive fusion, as every DisCo config), plus CLD.
from ..disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.weight_contrast = 2.0
train.output_dir = "./output/disco_cond_cld_only"
