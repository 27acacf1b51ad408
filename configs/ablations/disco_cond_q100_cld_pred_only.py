# Table 4 row (d) (Conditional DETR, 100 queries, VOC 46.8): DisCo DETR (DMOQF on) with CLD
# f_proj=False, f_pred=True. The full model is configs/disco_cond_q100.py, the baseline
# configs/siamese_cond_q100.py.
from ..disco_cond_q100 import dataloader, lr_multiplier, model, optimizer, train

model.cld_projector = False
model.cld_predictor = True
train.output_dir = "./output/disco_cond_q100_cld_pred_only"
