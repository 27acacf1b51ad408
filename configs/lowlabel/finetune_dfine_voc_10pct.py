# Fine-tune D-FINE R50-vd on 10 % of VOC trainval07+12's images (a label split; fold: label_split.fold=0..4),
# evaluate on the full test07. All but the data and the length is configs/finetune_dfine_voc.py's; the
# schedule is DETReg's 10 % VOC setting in epochs of the split, at our batch 64
# (configs/common/lowlabel.py says where each number comes from).
# Pre-trained model: train.init_checkpoint=/path/to/pretrained.pth
from ..common.lowlabel import low_label
from ..finetune_dfine_voc import dataloader, lr_multiplier, model, optimizer, train

label_split, lr_multiplier = low_label(dataloader, train, lr_multiplier, "voc", 10,
                                       output_dir="./output/finetune_dfine_voc_10pct_fold${label_split.fold}")
