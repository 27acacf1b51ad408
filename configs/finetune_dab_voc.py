# Fine-tune DAB-DETR R50 (300 anchor queries) on PASCAL VOC trainval07+12, evaluate on test07 with
# COCO-style AP (as the paper reports) and the VOC AP50 evaluator.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), AdamW 1e-4 (backbone x0.1), weight decay 1e-4,
# clip 0.1; batch 64 like the other fine-tuning configs.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
from .common.data.detr_detection import dataloader
from .common.finetune import voc
from .common.models.dab_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

optimizer.lr = 1e-4

lr_multiplier = voc(model, dataloader, train, epochs=50, drop_epoch=40, eval_every=5,
                    output_dir="./output/finetune_dab_voc")
