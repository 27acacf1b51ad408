# Table 4 baseline: Siamese DETR with 100 queries (VOC 46.9). Fine-tune with
# configs/finetune_cond_voc_q100.py.
from .siamese_cond import dataloader, lr_multiplier, model, optimizer, train

model.detector.num_queries = 100
train.finetune_config = "configs/finetune_cond_coco_q100.py"  # or finetune_cond_voc_q100.py: the same query count
train.output_dir = "./output/siamese_cond_q100"
