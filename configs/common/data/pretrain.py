# Pre-training data of DisCo DETR and Siamese DETR: unlabelled images + offline proposals -> two views,
# n = 10 boxes and 128 x 128 crops per image. Experiment files set the dataset and batch.
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from disco_detr.data.build import build_pretrain_loader
from disco_detr.data.photometric import PairedViewPhotometric
from disco_detr.data.pretrain_datasets import load_unlabelled_dicts
from disco_detr.data.pretrain_mapper import PairedViewMapper

dataloader = OmegaConf.create()
dataloader.train = L(build_pretrain_loader)(
    dataset=L(load_unlabelled_dicts)(names="mini_imagenet_train"),
    mapper=L(PairedViewMapper)(
        min_sizes=tuple(range(320, 481, 16)),
        max_size=600,
        flip_prob=0.5,
        crop_scale=(0.5, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        view_iou=0.5,
        corner_shift_prob=1.0,  # the released rule: both corners, a uniform fraction in [0, 1) of the way
        max_corner_shift=1.0,  # (0.5, 0.5): p = 0.5, at most half-way (mean view IoU about 0.54)
        num_boxes=10,
        min_area_fraction=0.05,
        jitter=0.1,
        crop_size=128,
        photometric="device",  # colour augmentation on the training device (batch_transform); "cpu": in the workers
        crops_on_device=True,  # the 128 x 128 crops are cut on the device too (same RoIAlign, from the uint8 views)
    ),
    total_batch_size=256,
    num_workers=8,
    seed="${train.seed}",
)
# applied by the training loop to each batch on the training device, before the forward: the colour augmentation
# (and the crops) the mapper left to the device; None when the mapper does everything (photometric="cpu")
dataloader.batch_transform = L(PairedViewPhotometric)()
