"""Convert an RT-DETR checkpoint (HuggingFace transformers or the PyTorch RT-DETR release) for ``train.init_checkpoint``.

    # transformers' port, e.g. the hub repo PekingU/rtdetr_r50vd (model.safetensors), COCO's 80 classes:
    python tools/convert/convert_rtdetr.py model.safetensors datasets/weights/rtdetr_r50vd_coco_d2.pth --source hf
    # the release's COCO checkpoint (rtdetr_r50vd_6x_coco_from_paddle.pth), its EMA weights:
    python tools/convert/convert_rtdetr.py rtdetr_r50vd_6x_coco_from_paddle.pth datasets/weights/rtdetr_r50vd_coco_d2.pth \\
        --source release --key ema.module

Download the file yourself; nothing is fetched here. The target architecture is built from a LazyConfig
(``--config``, default configs/finetune_rtdetr_coco.py, with optional ``key=value`` overrides, e.g.
``model.num_classes=20``); every tensor is checked key by key and shape by shape against it. The output holds
``{"model": {name: tensor}}`` in our layout (disco_detr.convert.rtdetr), ready for
``train.init_checkpoint`` (loading it strictly into the built model is part of the check).
"""
import os

from disco_detr.tooling.paths import REPO

from .common import convert_detector_main


def main(argv=None):
    from disco_detr.convert.rtdetr import RTDETR_SOURCES, convert_rtdetr

    convert_detector_main(argv, __doc__, RTDETR_SOURCES, convert_rtdetr,
                          os.path.join(REPO, "configs", "finetune_rtdetr_coco.py"))
