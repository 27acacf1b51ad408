# Fine-tune DINO 4-scale R50-vd (900 queries, denoising) on COCO train2017, evaluate on val2017.
# Paper schedule (DINO rows of the DisCo paper): 24 epochs, lr drop after 20 ("20/24"), AdamW 1e-4
# (backbone x0.1), weight decay 1e-4, clip 0.1, batch 64.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
# detrex checkpoint (its ResNet-50 backbone, so pass a config with build_resnet):
#   tools/convert_detrex.py --variant dino dino_r50_4scale_24ep.pth converted.pth --config <that config>
from .common.data.detr_detection import dataloader
from .common.models.dino_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import epochs_to_iters, step_schedule
from .common.train import train

COCO_TRAIN_IMAGES = 117266  # train2017 images with at least one box (filter_empty=True)
EPOCHS, DROP_EPOCH = 24, 20

model.num_classes = 80
dataloader.train.dataset.names = "coco_2017_train"
dataloader.test.dataset.names = "coco_2017_val"
dataloader.train.total_batch_size = 64

optimizer.lr = 1e-4

train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.eval_period = epochs_to_iters(2, COCO_TRAIN_IMAGES, dataloader.train.total_batch_size)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_dino_coco"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
