# Fine-tune Deformable DETR R50 single-scale (res5 only, one level; plain, 300 queries) on COCO
# train2017 -> val2017: configs/finetune_deformable_ms_coco.py with the single-scale model.
from .common.models.deformable_detr_r50 import single_scale
from .finetune_deformable_ms_coco import dataloader, lr_multiplier, model, optimizer, train

single_scale(model)
train.output_dir = "./output/finetune_deformable_ss_coco"
