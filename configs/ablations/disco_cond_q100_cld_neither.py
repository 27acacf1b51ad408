# Table 4 row (f) (Conditional DETR, 100 queries, VOC 43.9): DisCo DETR (DMOQF on) with CLD
# f_proj=False, f_pred=False. The full model is configs/disco_cond_q100.py, the baseline
# configs/siamese_cond_q100.py.
from ..disco_cond_q100 import dataloader, lr_multiplier, model, optimizer, train

model.cld_projector = False
model.cld_predictor = False
train.output_dir = "./output/disco_cond_q100_cld_neither"
