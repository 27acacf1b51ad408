# The small preset's fine-tuning: the CPU demo's detector of a variant (frozen ImageNet MobileNetV2, d = 128,
# 3+3 layers; configs/demo/<variant>.py) on photos at 320-480 px instead of 128-176, with the number of classes
# taken from the dataset. It is the fine-tuning counterpart of pretraining(method, variant, preset="small")
# (configs/common/pretrain.py). A leaf (configs/small/<variant>.py) reads:
#
#   from ..common.small import small_finetuning
#
#   _cfg = small_finetuning("cond")
#   dataloader = _cfg.dataloader
#   ...
#
# The image-size keys (docs/own_data.md "Image size"): dataloader.train.mapper.min_sizes (short side, one drawn
# per image), max_size (long side cap), crop_resize_sizes and crop_size (DETR's random-crop branch: resize the
# short side to one of crop_resize_sizes, crop a (min, max) px box, then resize to min_sizes);
# dataloader.test.mapper.min_sizes / max_size (evaluation, predict, the export's default input).
from detectron2.config import LazyConfig

from disco_detr.variants import VARIANTS as _VARIANTS
from disco_detr.variants import config_path

from .pretrain import SMALL_MAX_SIZE, SMALL_MIN_SIZES

#: evaluation / prediction size: short side 480, long side <= 640 (a 4:3 photo: 480 x 640)
SMALL_TEST_SIZE = (480, SMALL_MAX_SIZE)


def small_finetuning(variant: str):
    """The config (its five sections by name) of the small preset's fine-tuning of ``variant`` (a key of
    disco_detr.variants.VARIANTS): the demo preset's detector, optimiser (AdamW 3e-4), batch 8 and frozen
    MobileNetV2 (train.init_checkpoint: its ImageNet weights, or a small pre-training's model_final.pth);
    model.num_classes None (from the training dataset); train: short side 320-480 (long side <= 640), the crop
    branch at 0.6x the paper's sizes; test: 480 x <= 640; 50 epochs of the training set (lr drop at 0.8), a
    checkpoint every 500 iterations, evaluation at the end. Datasets default to the demo's (disco_demo_train /
    disco_demo_val): set yours."""
    cfg = LazyConfig.load(config_path(_VARIANTS[variant].demo_config))
    cfg.model.num_classes = None
    cfg.dataloader.train.mapper.update(min_sizes=SMALL_MIN_SIZES, max_size=SMALL_MAX_SIZE,
                                       crop_resize_sizes=(240, 300, 360), crop_size=(230, 360))
    cfg.dataloader.test.mapper.update(min_sizes=SMALL_TEST_SIZE[:1], max_size=SMALL_TEST_SIZE[1])
    cfg.dataloader.test.batch_size = 4
    cfg.train.update(max_iter=None, epochs=50, eval_period=0)
    cfg.train.checkpointer.period = 500
    cfg.train.output_dir = f"./output/small/finetune_{variant}"
    return cfg
