# Fine-tune DINO 4-scale R50-vd (900 queries, denoising) on PASCAL VOC trainval07+12, evaluate on test07
# with COCO-style AP (as the paper reports) and the VOC AP50 evaluator.
# Paper schedule (DINO rows of the DisCo paper): 36 epochs, lr drop after 30 ("30/36"), AdamW 1e-4
# (backbone x0.1), weight decay 1e-4, clip 0.1, batch 64.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
from .common.data.detr_detection import dataloader
from .common.finetune import voc
from .common.models.dino_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

optimizer.lr = 1e-4

lr_multiplier = voc(model, dataloader, train, epochs=36, drop_epoch=30, eval_every=4,
                    output_dir="./output/finetune_dino_voc")
