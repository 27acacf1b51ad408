# Fine-tune DAB-DETR R50 (300 anchor queries) on PASCAL VOC trainval07+12, evaluate on test07 with
# COCO-style AP (as the paper reports) and the VOC AP50 evaluator.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), AdamW 1e-4 (backbone x0.1), weight decay 1e-4,
# clip 0.1; batch 64 like the other fine-tuning configs.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
from .common.data.detr_detection import dataloader
from .common.data.voc_evaluation import voc_evaluators
from .common.models.dab_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import epochs_to_iters, step_schedule
from .common.train import train

VOC_TRAINVAL_IMAGES = 16551  # VOC2007 trainval (5011) + VOC2012 trainval (11540)
EPOCHS, DROP_EPOCH = 50, 40

model.num_classes = 20
dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
dataloader.test.dataset.names = "voc_2007_test"
dataloader.train.total_batch_size = 64
dataloader.evaluator = voc_evaluators  # "bbox" (COCO-style AP) and "pascal_voc" (VOC AP50)

optimizer.lr = 1e-4

train.max_iter = epochs_to_iters(EPOCHS, VOC_TRAINVAL_IMAGES, dataloader.train.total_batch_size)
train.eval_period = epochs_to_iters(5, VOC_TRAINVAL_IMAGES, dataloader.train.total_batch_size)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_dab_voc"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS)
