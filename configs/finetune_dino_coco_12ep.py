# DINO's 12-epoch COCO recipe (its paper's "1x": lr drop after epoch 11, "11/12"), otherwise as
# configs/finetune_dino_coco.py.
from .common.finetune import COCO_TRAIN_IMAGES, schedule
from .finetune_dino_coco import dataloader, model, optimizer, train

lr_multiplier = schedule(dataloader, train, COCO_TRAIN_IMAGES, epochs=12, drop_epoch=11, eval_every=2,
                         output_dir="./output/finetune_dino_coco_12ep")
