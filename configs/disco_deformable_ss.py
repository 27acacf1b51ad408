# DisCo DETR pre-training of single-scale Deformable DETR R50 (res5 only; the paper's VOC row
# 38.5 / 35.9 / 36.6 for scratch / Siamese / DisCo): 300 queries, n = 10, frozen SwAV R50
# (train.init_checkpoint), lambda_0 = 3 (L_rec, the release's Deformable value), lambda_1 = 10,
# lambda_3 = 2; AdamW 1e-4 with the sampling offsets and reference points at x0.1, as in
# fine-tuning; 60 epochs, drop at 40, batch 256 (configs/disco_cond.py).
from .common.models.deformable_detr_r50 import model as _detector
from .common.models.deformable_detr_r50 import single_scale
from .disco_cond import dataloader, lr_multiplier, model, optimizer, train

single_scale(_detector)
_detector.num_classes = 2  # object / no-object; fine-tuning replaces the class head
_detector.criterion = None  # DisCoDETR computes the pre-training losses
_detector.backbone.freeze_at = 5  # the whole backbone is frozen

model.detector = _detector
model.feature_levels = ("res5",)
model.weight_rec = 3.0  # lambda_0 (Deformable DETR)
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/disco_deformable_ss"
