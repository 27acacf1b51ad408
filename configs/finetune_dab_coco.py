# Fine-tune DAB-DETR R50 (300 anchor queries) on COCO train2017, evaluate on val2017.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), AdamW 1e-4 (backbone x0.1), weight decay 1e-4,
# clip 0.1; batch 64 like the other fine-tuning configs. configs/finetune_dab_coco_24ep.py: Table 1's 20/24.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
# detrex checkpoint: tools/convert_detrex.py --variant dab dab_detr_r50_50ep.pth converted.pth
from .common.data.detr_detection import dataloader
from .common.models.dab_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import epochs_to_iters, step_schedule
from .common.train import train

COCO_TRAIN_IMAGES = 117266  # train2017 images with at least one box (filter_empty=True)
EPOCHS, DROP_EPOCH = 50, 40

model.num_classes = 80
dataloader.train.dataset.names = "coco_2017_train"
dataloader.test.dataset.names = "coco_2017_val"
dataloader.train.total_batch_size = 64

optimizer.lr = 1e-4

train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.eval_period = epochs_to_iters(5, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_dab_coco"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
