# Fine-tune DINO 4-scale R50-vd (900 queries, denoising) on COCO train2017, evaluate on val2017.
# Paper schedule (DINO rows of the DisCo paper): 24 epochs, lr drop after 20 ("20/24"), AdamW 1e-4
# (backbone x0.1), weight decay 1e-4, clip 0.1, batch 64.
# Pre-trained model: train.init_checkpoint=/path/to/disco_pretrained.pth
# detrex checkpoint (its ResNet-50 backbone, so pass a config with build_resnet):
#   tools/convert/convert_detrex.py --variant dino dino_r50_4scale_24ep.pth converted.pth --config <that config>
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.dino_r50 import model
from .common.optim import AdamW as optimizer
from .common.train import train

optimizer.lr = 1e-4

lr_multiplier = coco(model, dataloader, train, epochs=24, drop_epoch=20, eval_every=2,
                     output_dir="./output/finetune_dino_coco")
