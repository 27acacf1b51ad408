# DETReg pre-training of DINO 4-scale R50-vd (900 queries selected from the encoder), with
# the release's DETReg settings, data, optimiser and schedule (configs/common/pretrain.py); C3 targets.
# Denoising is off: DETReg's pretext task is the proposals themselves, and the pre-training contract's
# decode() takes the matching queries only. DINO's encoder-proposal heads are supervised like a decoder
# layer (``*_enc``; the decision: disco_detr/modeling/detectors/dino.py).
from .common.pretrain import pretraining

_cfg = pretraining("detreg", "dino")
dataloader = _cfg.dataloader
lr_multiplier = _cfg.lr_multiplier
model = _cfg.model
optimizer = _cfg.optimizer
train = _cfg.train

train.output_dir = "./output/detreg_dino"
