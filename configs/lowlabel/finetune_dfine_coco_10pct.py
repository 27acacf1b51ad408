# Fine-tune D-FINE R50-vd on 10 % of COCO train2017's images (a label split; fold: label_split.fold=0..4),
# evaluate on the full val2017. All but the data and the length is configs/finetune_dfine_coco.py's; the
# schedule is DETReg's 10 % COCO setting in epochs of the split, at our batch 64
# (configs/common/lowlabel.py says where each number comes from).
# Pre-trained model: train.init_checkpoint=/path/to/pretrained.pth
from ..common.lowlabel import low_label
from ..finetune_dfine_coco import dataloader, lr_multiplier, model, optimizer, train

label_split, lr_multiplier = low_label(dataloader, train, lr_multiplier, "coco", 10,
                                       output_dir="./output/finetune_dfine_coco_10pct_fold${label_split.fold}")
