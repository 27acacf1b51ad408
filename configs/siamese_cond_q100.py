# Table 4 baseline: Siamese DETR with 100 queries (no CLD).
from .siamese_cond import dataloader, lr_multiplier, model, optimizer, train

model.detector.num_queries = 100
train.output_dir = "./output/siamese_cond_q100"
