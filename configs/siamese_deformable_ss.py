# Siamese DETR baseline for single-scale Deformable DETR: fixed query groups, additive fusion
# into the positional query (as Siamese DETR's release does for Deformable DETR), no CLD.
from .common.models.deformable_detr_r50 import model as _detector
from .common.models.deformable_detr_r50 import single_scale
from .common.pretrain import disco_pretraining

single_scale(_detector)
dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "deformable_ss")
model.use_dmoqf = False
model.weight_contrast = 0.0
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}
train.output_dir = "./output/siamese_deformable_ss"
