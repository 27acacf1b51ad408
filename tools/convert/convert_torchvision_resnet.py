#!/usr/bin/env python
"""Convert a torchvision-layout ResNet-50 checkpoint (torchvision, SwAV, ...) for

The entry point of :mod:`disco_detr.tooling.convert.convert_torchvision_resnet` (options: ``--help``).
"""
from disco_detr.tooling.convert.convert_torchvision_resnet import main

if __name__ == "__main__":
    main()
