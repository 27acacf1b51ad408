# DisCo DETR pre-training of DINO 4-scale R50-vd with DINO's own 900 queries (90 per box with n = 10).
# Object features: RoIAlign 7x7 on the stride 8/16/32 maps, pooled and concatenated (512 + 1024 + 2048
# channels); crop features the same pooled levels. DMOQF matches the proposals to the
# centres of the anchors DINO selects from each view's own encoder output; the fused feature enters the
# content query (tgt_embed). Denoising is off in pre-training (the decision and its reasons:
# disco_detr/modeling/detectors/dino.py). lambda_0 (L_rec) = 3 as for the other deformable-attention
# variants in the released configs (the paper gives none for DINO); lambda_3 = 2 (paper default).
# Frozen backbone: SSL ResNet-50-vd weights in train.init_checkpoint.
from .common.pretrain import pretraining

_cfg = pretraining("disco", "dino")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_dino"
