#!/usr/bin/env python
"""Convert an HGNetV2 checkpoint (D-FINE / DEIM release, timm or HuggingFace layout) for ``train.init_checkpoint``.

The entry point of :mod:`disco_detr.tooling.convert.convert_hgnetv2` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_hgnetv2 import main

if __name__ == "__main__":
    main()
