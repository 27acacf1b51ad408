# Fine-tune RT-DETR R50-vd on COCO: the paper's "40/50" schedule (50 epochs, lr x0.1 after 40); every other
# setting as configs/finetune_rtdetr_coco.py (batch 64, AdamW 1e-4 / backbone 1e-5, wd 1e-4, EMA, 640 multi-scale).
from .common.finetune import coco
from .finetune_rtdetr_coco import dataloader, model, optimizer, train

lr_multiplier = coco(model, dataloader, train, epochs=50, drop_epoch=40, warmup_iters=2000,
                     output_dir="./output/finetune_rtdetr_coco_50ep")
