# Table 3 (a), Deformable-MS (VOC 49.8): DMOQF on, CLD off (the table's lambda_3 column says 1
# for this row; with CLD off it has no effect).
from ..common.models.deformable_detr_r50 import model as _detector
from ..common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "deformable_ms")
model.weight_contrast = 0.0
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/disco_deformable_ms_dmoqf_only"
