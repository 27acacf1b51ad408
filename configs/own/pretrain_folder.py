# Your own images, step 1 (docs/own_data.md): pre-train on a folder of unlabelled photos, with the small preset
# (frozen ImageNet MobileNetV2, d=128, photos at 320-480 px). Copy this file anywhere (it imports nothing
# relative), set the paths, make the proposals, then train:
#   python tools/generate_proposals.py --images datasets/my_photos --out datasets/my_photos_edgeboxes.sqlite
#   python tools/lazyconfig_train_net.py --config-file my_pretrain.py
# tools/pretrain_on_folder.py does both in one command. For DETReg: "small/detreg_cond" and
# --method selective_search proposals, registered with method="selective_search".
from disco_detr.config import preset
from disco_detr.data import register_unlabelled_images

IMAGES = "datasets/my_photos"  # a folder of images (sub-folders are searched too)
PROPOSALS = "datasets/my_photos_edgeboxes.sqlite"  # written by tools/generate_proposals.py
register_unlabelled_images("my_photos", IMAGES, PROPOSALS)

# any preset of configs/ by name: small/<method>_<variant>, demo/<method>_<variant>, <method>_<variant>
dataloader, lr_multiplier, model, optimizer, train = preset("small/disco_cond")
dataloader.train.dataset.names = "my_photos"
train.init_checkpoint = "datasets/weights/mobilenet_v2_imagenet.pth"  # python tools/prepare_demo_backbone.py
train.output_dir = "./output/my_pretrain"
