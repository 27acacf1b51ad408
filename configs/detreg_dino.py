# DETReg pre-training of DINO 4-scale R50-vd (900 queries selected from the encoder), with
# the release's DETReg settings, data, optimiser and schedule (configs/common/pretrain.py); C3 targets.
# Denoising is off: DETReg's pretext task is the proposals themselves, and the pre-training contract's
# decode() takes the matching queries only. DINO's encoder-proposal heads are supervised like a decoder
# layer (``*_enc``; the decision: disco_detr/modeling/detectors/dino.py).
from .common.models.dino_r50 import model as _detector
from .common.pretrain import detreg_pretraining

dataloader, lr_multiplier, model, optimizer, train = detreg_pretraining(_detector)
train.output_dir = "./output/detreg_dino"
