# Fine-tune Deformable DETR R50 multi-scale (plain, 300 queries) on COCO train2017, evaluate on val2017.
# Paper schedule: 50 epochs, lr drop after 40 ("40/50"), AdamW 2e-4 (backbone, sampling offsets and
# reference points x0.1), weight decay 1e-4, clip 0.1; batch 64 like the other fine-tuning configs.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
# detrex checkpoint: tools/convert/convert_detrex.py --variant deformable detrex.pth converted.pth
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.deformable_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

optimizer.lr = 2e-4
optimizer.params.lr_factor_keys = {"sampling_offsets": 0.1, "reference_points": 0.1}

lr_multiplier = coco(model, dataloader, train, epochs=50, drop_epoch=40, eval_every=5,
                     output_dir="./output/finetune_deformable_ms_coco")
