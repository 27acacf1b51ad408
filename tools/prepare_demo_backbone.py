#!/usr/bin/env python
"""Install the demo's ImageNet MobileNetV2 backbone weights, offline-friendly.

The entry point of :mod:`disco_detr.tooling.prepare_demo_backbone` (options: ``--help``).
"""
from disco_detr.tooling.prepare_demo_backbone import main

if __name__ == "__main__":
    main()
