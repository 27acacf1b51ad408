# Your own images, step 2 (docs/own_data.md): fine-tune the small preset on a labelled PASCAL VOC folder, e.g.
# labelme's export (labelme2voc.py: Annotations/, JPEGImages/, class_names.txt), CVAT's or LabelImg's (a flat
# folder of images with their .xml beside them). Copy this file anywhere, set the paths, then:
#   python tools/lazyconfig_train_net.py --config-file my_finetune.py
# The config must fit the pre-training: configs/small/<variant>.py for a small/<method>_<variant>.py run
# (tools/pretrain_on_folder.py prints the one that matches).
from disco_detr.config import preset
from disco_detr.data import register_voc_dataset

VOC_DIR = "datasets/my_voc"
CLASS_NAMES = VOC_DIR + "/class_names.txt"  # one name a line (labelme's _background_ is skipped), or a list
# split None: every .xml of the folder; "train" / "val": ImageSets/Main/<split>.txt
register_voc_dataset("my_voc_train", VOC_DIR, None, CLASS_NAMES)
register_voc_dataset("my_voc_val", VOC_DIR, None, CLASS_NAMES, label_splits=False)

dataloader, lr_multiplier, model, optimizer, train = preset("small/cond")
dataloader.train.dataset.names = "my_voc_train"
dataloader.test.dataset.names = "my_voc_val"  # model.num_classes follows the training set's classes
train.init_checkpoint = "./output/my_pretrain/model_final.pth"  # the pre-training's checkpoint
train.output_dir = "./output/my_finetune"
