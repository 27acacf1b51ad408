# Fine-tune RT-DETR R50-vd on PASCAL VOC trainval07+12, evaluate on test07 with COCO-style AP and VOC AP50:
# the paper's "40/50" schedule (50 epochs, lr x0.1 after 40); every other setting as
# configs/finetune_rtdetr_coco.py (AdamW 1e-4 / backbone 1e-5, wd 1e-4, clip 0.1, batch 16, EMA, 640 x 640
# inputs with multi-scale training).
# Pre-trained model: train.init_checkpoint=/path/to/disco_rtdetr_pretrained.pth
from .common.data.voc_evaluation import voc_evaluators
from .common.schedule import epochs_to_iters, step_schedule
from .finetune_rtdetr_coco import BATCH, WARMUP_ITERS, dataloader, model, optimizer, train

VOC_TRAINVAL_IMAGES = 16551  # VOC2007 trainval (5011) + VOC2012 trainval (11540)
EPOCHS, DROP_EPOCH = 50, 40

model.num_classes = 20
dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
dataloader.test.dataset.names = "voc_2007_test"
dataloader.evaluator = voc_evaluators  # "bbox" (COCO-style AP) and "pascal_voc" (VOC AP50)

train.max_iter = epochs_to_iters(EPOCHS, VOC_TRAINVAL_IMAGES, BATCH)
train.eval_period = epochs_to_iters(5, VOC_TRAINVAL_IMAGES, BATCH)
train.checkpointer.period = train.eval_period
train.output_dir = "./output/finetune_rtdetr_voc"
lr_multiplier = step_schedule(drop_fraction=DROP_EPOCH / EPOCHS, warmup_fraction=WARMUP_ITERS / train.max_iter)
