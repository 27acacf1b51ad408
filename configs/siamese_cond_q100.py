# Table 4 baseline: Siamese DETR with 100 queries (VOC 46.9). Fine-tune with
# configs/finetune_cond_voc_q100.py.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

model.detector.num_queries = 100
train.output_dir = "./output/siamese_cond_q100"
