# Table 3 ablation: CLD on, DMOQF off (Siamese DETR's fixed query groups).
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.use_dmoqf = False
train.output_dir = "./output/disco_cond_cld_only"
