# DETReg pre-training data (Bar et al., CVPR 2022): unlabelled images + offline selective-search proposals
# (tools/generate_proposals.py --method selective_search) -> one augmented view, its first 30 proposals
# and a 128 x 128 colour-augmented crop of each. Experiment files set the dataset and batch.
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from disco_detr.data.build import build_pretrain_loader
from disco_detr.data.detreg_mapper import DETREG_SCALES, DETRegMapper
from disco_detr.data.pretrain_datasets import load_unlabelled_dicts

dataloader = OmegaConf.create()
dataloader.train = L(build_pretrain_loader)(
    dataset=L(load_unlabelled_dicts)(names="mini_imagenet_train_ss"),
    mapper=L(DETRegMapper)(
        scales=DETREG_SCALES,  # short side 320-480 (the release's list, without 384), long side <= 600
        max_size=600,
        crop_resize_sizes=(400, 500, 600),  # the other branch: resize -> random crop 384-600 -> resize
        crop_size_range=(384, 600),
        flip_prob=0.5,
        num_proposals=30,  # the first 30 in selective search's order (no score sort)
        min_boxes=2,  # a view with fewer boxes is replaced by another image
        crop_size=128,
    ),
    total_batch_size=192,
    num_workers=8,
    seed="${train.seed}",
)
dataloader.batch_transform = None  # the mapper colour-augments the crops in the workers: nothing left to the device
