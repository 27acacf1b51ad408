# Fine-tune D-FINE (R50-vd, configs/common/models/d_fine_r50vd.py) on COCO train2017, evaluate on val2017: the
# paper's "20/24" schedule (24 epochs, lr x0.1 after 20), batch 64, as configs/finetune_rtdetr_coco.py (clip 0.1,
# EMA 0.9999 with 2000 warm-up updates, 2000 warm-up iterations, 640 x 640 inputs with multi-scale training
# 480..800). As the D-FINE-L release: AdamW lr 2.5e-4, backbone 1.25e-5 (x0.05), weight decay 1.25e-4 (none on
# norms). Not reproduced from the release: its flat-cosine schedule, its photometric / zoom-out / IoU-crop
# augmentation and the last epochs without augmentation.
# Pre-trained model: train.init_checkpoint=/path/to/disco_dfine_pretrained.pth
# Published D-FINE weights: tools/convert/convert_dfine.py --source hf|release ...
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.d_fine_r50vd import model
from .common.optim import AdamW as optimizer
from .common.train import train

dataloader.train.mapper.square_sizes = tuple(range(480, 801, 32))
dataloader.test.mapper.square_sizes = (640,)

optimizer.lr = 2.5e-4
optimizer.weight_decay = 1.25e-4
optimizer.params.backbone_lr_factor = 0.05  # 1.25e-5

train.clip_grad_norm = 0.1
train.ema.enabled = True
train.ema.decay = 0.9999
train.ema.warmups = 2000

lr_multiplier = coco(model, dataloader, train, epochs=24, drop_epoch=20, eval_every=2, warmup_iters=2000,
                     output_dir="./output/finetune_dfine_coco")
