# Fine-tune RT-DETR R50-vd on COCO: the paper's "40/50" schedule (50 epochs, lr x0.1 after 40); every other
# setting as configs/finetune_rtdetr_coco.py (AdamW 1e-4 / backbone 1e-5, wd 1e-4, EMA, 640 multi-scale).
from .common.schedule import epochs_to_iters, step_schedule
from .finetune_rtdetr_coco import BATCH, COCO_TRAIN_IMAGES, WARMUP_ITERS, dataloader, model, optimizer, train

EPOCHS, DROP_EPOCH = 50, 40

train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, BATCH)
train.eval_period = epochs_to_iters(5, COCO_TRAIN_IMAGES, BATCH)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_rtdetr_coco_50ep"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS, warmup_fraction=WARMUP_ITERS / train.max_iter)
