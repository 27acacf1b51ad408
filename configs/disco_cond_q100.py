# DisCo DETR with 100 queries (n = 10 boxes: 10 queries per box): Table 4's full model
# (VOC 47.8). Fine-tune with configs/finetune_cond_voc_q100.py (the same query count).
from .common.pretrain import pretraining

_cfg = pretraining("disco", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

model.detector.num_queries = 100
train.output_dir = "./output/disco_cond_q100"
