"""Convert a D-FINE checkpoint (HuggingFace transformers or the D-FINE release) for ``train.init_checkpoint``.

    # transformers' layout (a DFineForObjectDetection state dict with a ResNet-vd backbone), COCO's 80 classes:
    python tools/convert/convert_dfine.py model.safetensors datasets/weights/dfine_r50vd_coco_d2.pth --source hf
    # the release's layout (src/zoo/dfine), its EMA weights:
    python tools/convert/convert_dfine.py dfine_coco.pth datasets/weights/dfine_coco_d2.pth --source release \\
        --key ema.module

Download the file yourself; nothing is fetched here. The target architecture is built from a LazyConfig
(``--config``, default configs/finetune_dfine_coco.py: ResNet-50-vd; the release's HGNetv2 checkpoints need a
config with that backbone), with optional ``key=value`` overrides; every tensor is checked key by key and shape by
shape against it. The output holds ``{"model": {name: tensor}}`` in our layout (disco_detr.convert.d_fine).
"""
import os

from disco_detr.tooling.paths import REPO

from .common import convert_detector_main


def main(argv=None):
    from disco_detr.convert.d_fine import DFINE_SOURCES, convert_dfine

    convert_detector_main(argv, __doc__, DFINE_SOURCES, convert_dfine,
                          os.path.join(REPO, "configs", "finetune_dfine_coco.py"))
