# Table 4 row (e) (Conditional DETR, 100 queries, VOC 47.5): DisCo DETR (DMOQF on) with CLD
# f_proj=True, f_pred=False. The full model is configs/disco_cond_q100.py, the baseline
# configs/siamese_cond_q100.py.
from ..disco_cond_q100 import dataloader, lr_multiplier, model, optimizer, train

model.cld_projector = True
model.cld_predictor = False
train.output_dir = "./output/disco_cond_q100_cld_proj_only"
