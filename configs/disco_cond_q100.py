# DisCo DETR with 100 queries (n = 10 boxes: 10 queries per box): Table 4's full model
# (VOC 47.8). Fine-tune with configs/finetune_cond_voc_q100.py (the same query count).
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

model.detector.num_queries = 100
train.finetune_config = "configs/finetune_cond_coco_q100.py"  # or finetune_cond_voc_q100.py: the same query count
train.output_dir = "./output/disco_cond_q100"
