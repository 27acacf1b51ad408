# DETReg pre-training of DINO 4-scale R50-vd (900 queries selected from the encoder), with
# configs/detreg_deformable_ms.py's DETReg settings, data, optimiser and schedule; C3 embedding targets.
# Denoising is off: DETReg's pretext task is the proposals themselves, and the pre-training contract's
# decode() takes the matching queries only. DINO's encoder-proposal heads are supervised like a decoder
# layer (``*_enc``; the decision: disco_detr/modeling/detectors/dino.py).
from .common.models.dino_r50 import model as _detector
from .detreg_deformable_ms import dataloader, lr_multiplier, model, optimizer, train

_detector.num_classes = 1
_detector.criterion = None
_detector.num_denoising = 0
_detector.backbone.freeze_at = 5

model.detector = _detector
train.output_dir = "./output/detreg_dino"
