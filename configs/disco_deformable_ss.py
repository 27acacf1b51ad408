# DisCo DETR pre-training of single-scale Deformable DETR R50 (res5 only; the paper's VOC row
# 38.5 / 35.9 / 36.6 for scratch / Siamese / DisCo): 300 queries, n = 10, frozen SwAV R50
# (train.init_checkpoint), lambda_0 = 3 (L_rec, the release's Deformable value), lambda_1 = 10,
# lambda_3 = 2; AdamW 1e-4 with the sampling offsets and reference points at x0.1, as in
# fine-tuning; 60 epochs, drop at 40, batch 256 (configs/common/pretrain.py).
from .common.pretrain import pretraining

_cfg = pretraining("disco", "deformable_ss")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_deformable_ss"
