# DisCo DETR pre-training of Conditional DETR R50 (paper settings): 300 queries, n = 10
# boxes, frozen R50 (SwAV weights converted with tools/convert/convert_torchvision_resnet.py, in
# train.init_checkpoint: the run refuses to start without them), AdamW 1e-4, weight decay
# 1e-4, clip 0.1, 60 epochs of the training set the run loads, lr drop at epoch 40
# ("40/60"), batch 256. Fusion adds the other view's object feature to the positional query and
# lets the detector's own layers process the sum (eq. 3 read as the detector's own path).
from .common.pretrain import pretraining

_cfg = pretraining("disco", "cond")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/disco_cond"
