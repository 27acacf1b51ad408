# Fine-tune DAB-DETR R50 on COCO with the paper's short schedule (Table 1, "20/24"): 24 epochs, lr drop
# after 20; everything else as configs/finetune_dab_coco.py.
from .common.schedule import epochs_to_iters, step_schedule
from .finetune_dab_coco import COCO_TRAIN_IMAGES, dataloader, model, optimizer, train

EPOCHS, DROP_EPOCH = 24, 20

train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.eval_period = epochs_to_iters(4, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_dab_coco_24ep"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
