#!/usr/bin/env python
"""Convert an RT-DETR checkpoint (HuggingFace transformers or the PyTorch RT-DETR release) for ``train.init_checkpoint``.

The entry point of :mod:`disco_detr.tooling.convert.convert_rtdetr` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_rtdetr import main

if __name__ == "__main__":
    main()
