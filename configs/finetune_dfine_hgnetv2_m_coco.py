# Fine-tune D-FINE-M on HGNetV2 (configs/common/models/d_fine_hgnetv2_m.py) on COCO: configs/finetune_dfine_coco.py's
# schedule and data with the release's M-size detector. Published weights: zoo://dfine/dfine_hgnetv2_m_coco
# (unverified, docs/model_zoo.md) or tools/convert/convert_dfine.py --source release.
from .common.models.d_fine_hgnetv2_m import model
from .finetune_dfine_coco import dataloader, lr_multiplier, optimizer, train

model.num_classes = 80
train.output_dir = "./output/finetune_dfine_hgnetv2_m_coco"
