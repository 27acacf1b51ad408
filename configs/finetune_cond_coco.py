# Fine-tune Conditional DETR R50 (300 queries) on COCO train2017, evaluate on val2017.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), batch 64, AdamW 1e-4.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.conditional_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

lr_multiplier = coco(model, dataloader, train, epochs=50, drop_epoch=40, eval_every=5,
                     output_dir="./output/finetune_cond_coco")
