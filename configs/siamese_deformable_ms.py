# Table 3, Deformable-MS baseline (VOC 48.7): Siamese DETR (fixed query groups, additive
# fusion, no CLD) around multi-scale Deformable DETR.
from .common.models.deformable_detr_r50 import model as _detector
from .common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res3", "res4", "res5"), "deformable_ms")
model.use_dmoqf = False
model.weight_contrast = 0.0
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/siamese_deformable_ms"
