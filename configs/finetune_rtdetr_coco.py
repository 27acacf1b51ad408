# Fine-tune RT-DETR R50-vd on COCO train2017, evaluate on val2017: the paper's "20/24" schedule (24 epochs,
# lr x0.1 after 20). As the RT-DETR release: AdamW lr 1e-4, backbone 1e-5 (x0.1), weight decay 1e-4 (none on
# norms), clip 0.1, batch 16, linear warm-up over 2000 iterations, EMA of the weights (decay 0.9999, 2000
# warm-up updates; evaluation and the final checkpoint use it), 640 x 640 inputs with multi-scale training
# (squares 480..800 px, step 32, drawn per image; the release draws one size per batch).
# Not reproduced from the release's augmentation: RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop (the
# DETR crop branch stands in for the crops).
# Pre-trained model: train.init_checkpoint=/path/to/disco_rtdetr_pretrained.pth
# Published RT-DETR weights: tools/convert_rtdetr.py --source hf|release ...
from .common.data.detr_detection import dataloader
from .common.models.rt_detr_r50vd import model
from .common.optim import AdamW as optimizer
from .common.schedule import epochs_to_iters, step_schedule
from .common.train import train

COCO_TRAIN_IMAGES = 117266  # train2017 images with at least one box (filter_empty=True)
EPOCHS, DROP_EPOCH = 24, 20
BATCH = 16
WARMUP_ITERS = 2000

model.num_classes = 80
dataloader.train.dataset.names = "coco_2017_train"
dataloader.test.dataset.names = "coco_2017_val"
dataloader.train.total_batch_size = BATCH
dataloader.train.mapper.square_sizes = tuple(range(480, 801, 32))
dataloader.test.mapper.square_sizes = (640,)

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.backbone_lr_factor = 0.1  # 1e-5

train.clip_grad_norm = 0.1
train.ema.enabled = True
train.ema.decay = 0.9999
train.ema.warmups = 2000
train.max_iter = epochs_to_iters(EPOCHS, COCO_TRAIN_IMAGES, BATCH)
train.eval_period = epochs_to_iters(2, COCO_TRAIN_IMAGES, BATCH)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_rtdetr_coco"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS, warmup_fraction=WARMUP_ITERS / train.max_iter)
