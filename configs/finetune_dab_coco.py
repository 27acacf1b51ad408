# Fine-tune DAB-DETR R50 (300 anchor queries) on COCO train2017, evaluate on val2017.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), AdamW 1e-4 (backbone x0.1), weight decay 1e-4,
# clip 0.1; batch 64 like the other fine-tuning configs. configs/finetune_dab_coco_24ep.py: Table 1's 20/24.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
# detrex checkpoint: tools/convert/convert_detrex.py --variant dab dab_detr_r50_50ep.pth converted.pth
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.dab_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

optimizer.lr = 1e-4

lr_multiplier = coco(model, dataloader, train, epochs=50, drop_epoch=40, eval_every=5,
                     output_dir="./output/finetune_dab_coco")
