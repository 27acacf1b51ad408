# Table 3 (Conditional DETR, VOC 51.14): CLD on (lambda_3 = 2), DMOQF off: Siamese DETR's fixed
# query groups and additive fusion (the MLP of eq. 3 belongs to DMOQF), plus CLD.
from ..disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
model.fusion = "add"
model.weight_contrast = 2.0
train.output_dir = "./output/disco_cond_cld_only"
