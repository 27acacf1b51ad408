# configs/finetune_cond_voc.py with 100 queries: fine-tunes the 100-query pre-trainings of
# Table 4 (configs/disco_cond_q100.py, configs/siamese_cond_q100.py, configs/ablations/disco_cond_q100_*).
from .finetune_cond_voc import dataloader, lr_multiplier, model, optimizer, train

model.num_queries = 100
train.output_dir = "./output/finetune_cond_voc_q100"
