# Fine-tune DAB-DETR R50 on COCO with the paper's short schedule (Table 1, "20/24"): 24 epochs, lr drop
# after 20; everything else as configs/finetune_dab_coco.py.
from .common.finetune import COCO_TRAIN_IMAGES, schedule
from .finetune_dab_coco import dataloader, model, optimizer, train

lr_multiplier = schedule(dataloader, train, COCO_TRAIN_IMAGES, epochs=24, drop_epoch=20, eval_every=4,
                         output_dir="./output/finetune_dab_coco_24ep")
