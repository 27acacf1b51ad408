# Table 3 (Conditional DETR, VOC 51.4): DMOQF on (distance-aware groups, additive fusion), CLD off.
from ..common.models.conditional_detr_r50 import model as _detector
from ..common.pretrain import disco_pretraining

dataloader, lr_multiplier, model, optimizer, train = disco_pretraining(_detector, ("res5",), "cond")
model.weight_contrast = 0.0
train.output_dir = "./output/disco_cond_dmoqf_only"
