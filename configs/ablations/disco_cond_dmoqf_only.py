# Table 3 (Conditional DETR, VOC 51.4): DMOQF on (distance-aware groups, additive fusion), CLD off.
from ..disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.weight_contrast = 0.0
train.output_dir = "./output/disco_cond_dmoqf_only"
