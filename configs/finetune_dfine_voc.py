# Fine-tune D-FINE R50-vd on PASCAL VOC trainval07+12, evaluate on test07 with COCO-style AP and VOC AP50: the
# paper's "40/50" schedule (50 epochs, lr x0.1 after 40); every other setting as configs/finetune_dfine_coco.py.
# Pre-trained model: train.init_checkpoint=/path/to/disco_dfine_pretrained.pth
from .common.finetune import voc
from .finetune_dfine_coco import dataloader, model, optimizer, train

lr_multiplier = voc(model, dataloader, train, epochs=50, drop_epoch=40, warmup_iters=2000,
                    output_dir="./output/finetune_dfine_voc")
