# Fine-tune RT-DETR R50-vd on PASCAL VOC trainval07+12, evaluate on test07 with COCO-style AP and VOC AP50:
# the paper's "40/50" schedule (50 epochs, lr x0.1 after 40); every other setting as
# configs/finetune_rtdetr_coco.py (batch 64, AdamW 1e-4 / backbone 1e-5, wd 1e-4, clip 0.1, EMA, 640 x 640
# inputs with multi-scale training).
# Pre-trained model: train.init_checkpoint=/path/to/disco_rtdetr_pretrained.pth
from .common.finetune import voc
from .finetune_rtdetr_coco import dataloader, model, optimizer, train

lr_multiplier = voc(model, dataloader, train, epochs=50, drop_epoch=40, warmup_iters=2000,
                    output_dir="./output/finetune_rtdetr_voc")
