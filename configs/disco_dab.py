# DisCo DETR pre-training of DAB-DETR R50 (the paper's rows VOC 41.1 / 48.7 / 50.2 and COCO 36.4 / 38.0 / 39.7
# for scratch / Siamese / DisCo): 300 anchor queries, n = 10 boxes, frozen SwAV R50 (train.init_checkpoint),
# object and crop features from res5. DMOQF matches proposals to the centres of the learned anchors and the
# fused object feature enters the content query (the positional query is recomputed from the anchor in every
# layer). lambda_0 = 5 (L_rec; the authors released no DAB-DETR pre-training, so Conditional DETR's value),
# lambda_1 = 10, lambda_3 = 2; AdamW 1e-4, 60 epochs, drop at 40, batch 256 (configs/common/pretrain.py).
from .common.pretrain import pretraining

_cfg = pretraining("disco", "dab")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_dab"
