# DisCo DETR with 100 queries (n = 10 boxes: 10 queries per box): Table 4's full model
# (VOC 47.8). Fine-tune with configs/finetune_cond_voc_q100.py (the same query count).
from .common.models.conditional_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

_detector.num_queries = 100
dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "cond")
train.output_dir = "./output/disco_cond_q100"
