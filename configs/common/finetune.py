# The dataset side of every fine-tuning config: PASCAL VOC trainval07+12 -> test07 (COCO-style AP, the
# paper's metric, plus VOC AP50) or COCO train2017 -> val2017, batch 64 (the paper's), and a step schedule
# in epochs of that dataset ("40/50" = 50 epochs, lr x0.1 after 40), evaluating and checkpointing every
# `eval_every` epochs. An experiment file calls one of them on its model/dataloader/train sections:
#     lr_multiplier = voc(model, dataloader, train, epochs=50, drop_epoch=40, output_dir="./output/x")
from .data.voc_evaluation import voc_evaluators
from .schedule import epochs_to_iters, step_schedule

VOC_TRAINVAL_IMAGES = 16551  # VOC2007 trainval (5011) + VOC2012 trainval (11540)
COCO_TRAIN_IMAGES = 117266  # train2017 images with at least one box (filter_empty=True)
BATCH = 64


def schedule(dataloader, train, num_images, *, epochs, drop_epoch, output_dir, eval_every=5, warmup_iters=0):
    """Batch 64, `epochs` passes over `num_images` with the lr drop at `drop_epoch`; returns lr_multiplier."""
    dataloader.train.total_batch_size = BATCH
    train.max_iter = epochs_to_iters(epochs, num_images, BATCH)
    train.eval_period = epochs_to_iters(eval_every, num_images, BATCH)
    train.checkpointer.period = train.eval_period
    train.output_dir = output_dir
    return step_schedule(drop_fraction=drop_epoch / epochs, warmup_fraction=warmup_iters / train.max_iter)


def voc(model, dataloader, train, **schedule_args):
    """PASCAL VOC07+12 -> test07, 20 classes, COCO-style AP ("bbox") and VOC AP ("pascal_voc")."""
    model.num_classes = 20
    dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
    dataloader.test.dataset.names = "voc_2007_test"
    dataloader.evaluator = voc_evaluators
    return schedule(dataloader, train, VOC_TRAINVAL_IMAGES, **schedule_args)


def coco(model, dataloader, train, **schedule_args):
    """COCO train2017 -> val2017, 80 classes, COCO-style AP."""
    model.num_classes = 80
    dataloader.train.dataset.names = "coco_2017_train"
    dataloader.test.dataset.names = "coco_2017_val"
    return schedule(dataloader, train, COCO_TRAIN_IMAGES, **schedule_args)
