# Table 3 (a), Deformable-MS (VOC 49.8): DMOQF on, CLD off (the table's lambda_3 column says 1
# for this row; with CLD off it has no effect).
from ..disco_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

model.weight_contrast = 0.0
train.output_dir = "./output/disco_deformable_ms_dmoqf_only"
