# Siamese DETR baseline for DAB-DETR: fixed query groups (query i gets proposal floor(i / (N / n))), the other
# view's object feature *added* to the content query (as DisCo does), the field DAB-DETR takes fused features in, no CLD.
# Everything else as configs/disco_dab.py.
from .common.pretrain import pretraining

_cfg = pretraining("siamese", "dab")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/siamese_dab"
