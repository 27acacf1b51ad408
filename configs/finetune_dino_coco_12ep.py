# DINO's 12-epoch COCO recipe (its paper's "1x": lr drop after epoch 11, "11/12"), otherwise as
# configs/finetune_dino_coco.py.
from .common.schedule import epochs_to_iters, step_schedule
from .finetune_dino_coco import COCO_TRAIN_IMAGES, dataloader, model, optimizer, train

EPOCHS, DROP_EPOCH = 12, 11

train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.eval_period = epochs_to_iters(2, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_dino_coco_12ep"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
