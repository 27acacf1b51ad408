#!/usr/bin/env python
"""Convert a ResNet-vd checkpoint (RT-DETR release, timm or HuggingFace layout) for ``train.init_checkpoint``.

The entry point of :mod:`disco_detr.tooling.convert.convert_resnet_vd` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_resnet_vd import main

if __name__ == "__main__":
    main()
