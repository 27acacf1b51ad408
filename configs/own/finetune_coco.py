# Your own images, step 2 (docs/own_data.md): fine-tune the small preset on a labelled COCO-style json, as
# annotation tools export it (CVAT, Label Studio, labelme2coco, ...). Copy this file anywhere, set the paths,
# then:
#   python tools/lazyconfig_train_net.py --config-file my_finetune.py
# The config must fit the pre-training: configs/small/<variant>.py for a small/<method>_<variant>.py run.
from disco_detr.config import preset
from disco_detr.data import register_coco_dataset

register_coco_dataset("my_coco_train", "datasets/my_coco/train.json", "datasets/my_coco/images")
register_coco_dataset("my_coco_val", "datasets/my_coco/val.json", "datasets/my_coco/images", label_splits=False)

dataloader, lr_multiplier, model, optimizer, train = preset("small/cond")
dataloader.train.dataset.names = "my_coco_train"
dataloader.test.dataset.names = "my_coco_val"  # model.num_classes follows the training set's classes
train.init_checkpoint = "./output/my_pretrain/model_final.pth"  # the pre-training's checkpoint
train.output_dir = "./output/my_finetune"
