# The label side of every low-label fine-tuning config (configs/lowlabel/): train on a registered label split
# (disco_detr/data/label_splits.py) of COCO train2017 or VOC trainval07+12, evaluate on the FULL val split
# (val2017 / test07, left as the base config sets it), keep the base config's model, optimizer, batch 64 and
# warm-up (in iterations), and replace its length by DETReg's low-label schedule in epochs of the split.
#
# The fold is the override key `label_split.fold=0..4` (the split's name reads it); the split's image ids are
# written to `${train.output_dir}/label_splits/<split>.json` (configs/common/data/detr_detection.py).
#
# DETReg's settings (its release, configs/DETReg_fine_tune_{1,2,5,10}pct_coco.sh and _10pct_pascal.sh with the
# README's commands; Deformable DETR lr 2e-4, backbone 2e-5, weight decay 1e-4, clip 0.1):
#   COCO 1 / 2 / 5 / 10 %: 2000 / 1000 / 500 / 400 epochs, --lr_drop equal to --epochs (no lr drop), batch 24;
#   VOC 10 %: 200 epochs, lr drop after 150, batch 8, evaluation every 20 epochs.
# Our reasoning where we differ: the batch stays 64 (every fine-tuning config's, with the lr each variant's
# full-data recipe tunes for it), so an epoch has fewer steps than DETReg's (x 24/64 on COCO, x 8/64 on VOC);
# the epochs, hence the passes over each labelled image, are DETReg's. Evaluation every tenth of the run.
import math

from .finetune import BATCH, COCO_TRAIN_IMAGES, VOC_TRAINVAL_IMAGES
from .schedule import epochs_to_iters, step_schedule

#: (parent dataset, images in its split pool: those with a non-crowd box) of each benchmark
_PARENTS = {"coco": ("coco_2017_train", COCO_TRAIN_IMAGES), "voc": ("voc_2007_2012_trainval", VOC_TRAINVAL_IMAGES)}
#: DETReg's low-label schedules: (benchmark, percent) -> (epochs, lr drop epoch)
_DETREG_SCHEDULES = {("coco", 1): (2000, 2000), ("coco", 2): (1000, 1000), ("coco", 5): (500, 500),
                    ("coco", 10): (400, 400), ("voc", 10): (200, 150)}


def split_images(benchmark: str, percent: float) -> int:
    """Images in a ``percent`` % split of ``benchmark`` (floor of the fraction of the pool, as the split draws)."""
    return max(1, math.floor(percent / 100 * _PARENTS[benchmark][1]))


def low_label(dataloader, train, lr_multiplier, benchmark: str, percent: int, output_dir: str):
    """Point the training set of a fine-tuning config (already set up by ``coco()`` / ``voc()`` of
    finetune.py) at fold ``${label_split.fold}`` of the ``percent`` % split of ``benchmark`` ("coco" or
    "voc"), with DETReg's schedule for it. Returns ``(label_split, lr_multiplier)``: the config's new
    top-level ``label_split`` section (``fold`` 0) and its schedule, keeping the base's warm-up iterations."""
    parent, _ = _PARENTS[benchmark]
    epochs, drop_epoch = _DETREG_SCHEDULES[(benchmark, percent)]
    warmup_iters = round(lr_multiplier.warmup_length * train.max_iter)
    num_images = split_images(benchmark, percent)
    dataloader.train.dataset.names = f"{parent}_{percent}pct_fold${{label_split.fold}}"
    train.max_iter = epochs_to_iters(epochs, num_images, BATCH)
    train.eval_period = epochs_to_iters(epochs / 10, num_images, BATCH)
    train.checkpointer.period = train.eval_period
    train.output_dir = output_dir
    schedule = step_schedule(drop_fraction=drop_epoch / epochs, warmup_fraction=warmup_iters / train.max_iter)
    return dict(fold=0), schedule
