# Fine-tune Conditional DETR R50 (300 queries) on PASCAL VOC trainval07+12, evaluate on
# test07 with COCO-style AP (as the paper reports) and the VOC AP50 evaluator.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), batch 64, AdamW 1e-4.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
from .common.data.detr_detection import dataloader
from .common.finetune import voc
from .common.models.conditional_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

lr_multiplier = voc(model, dataloader, train, epochs=50, drop_epoch=40, eval_every=5,
                    output_dir="./output/finetune_cond_voc")
