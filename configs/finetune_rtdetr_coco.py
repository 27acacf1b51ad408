# Fine-tune RT-DETR R50-vd on COCO train2017, evaluate on val2017: the paper's "20/24" schedule (24 epochs,
# lr x0.1 after 20), batch 64 (the paper's fine-tuning batch for every variant). As the RT-DETR release:
# AdamW lr 1e-4, backbone 1e-5 (x0.1), weight decay 1e-4 (none on norms), clip 0.1, linear warm-up over 2000
# iterations, EMA of the weights (decay 0.9999, 2000 warm-up updates; evaluation and the final checkpoint use
# it) -- the release's values in iterations, at its batch 16 --, 640 x 640 inputs with multi-scale training
# (squares 480..800 px, step 32, drawn per image; the release draws one size per batch).
# Not reproduced from the release's augmentation: RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop (the
# DETR crop branch stands in for the crops).
# Pre-trained model: train.init_checkpoint=/path/to/disco_rtdetr_pretrained.pth
# Published RT-DETR weights: tools/convert/convert_rtdetr.py --source hf|release ...
from .common.data.detr_detection import dataloader
from .common.finetune import coco
from .common.models.rt_detr_r50vd import model
from .common.optim import AdamW as optimizer
from .common.train import train

dataloader.train.mapper.square_sizes = tuple(range(480, 801, 32))
dataloader.test.mapper.square_sizes = (640,)

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.backbone_lr_factor = 0.1  # 1e-5

train.clip_grad_norm = 0.1
train.ema.enabled = True
train.ema.decay = 0.9999
train.ema.warmups = 2000

lr_multiplier = coco(model, dataloader, train, epochs=24, drop_epoch=20, eval_every=2, warmup_iters=2000,
                     output_dir="./output/finetune_rtdetr_coco")
