# Table 4 ablation (100 queries, Siamese DETR + CLD): f_proj=True, f_pred=False.
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.detector.num_queries = 100
model.use_dmoqf = False
model.cld_projector = True
model.cld_predictor = False
train.output_dir = "./output/siamese_cond_q100_cld_proj_only"
