# Table 3 (b), Deformable-MS (VOC 49.6): CLD on (lambda_3 = 2), DMOQF off (Siamese DETR's fixed
# groups and additive fusion).
from ..common.models.deformable_detr_r50 import model as _detector
from ..common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "deformable_ms")
model.use_dmoqf = False
model.weight_contrast = 2.0
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/disco_deformable_ms_cld_only"
